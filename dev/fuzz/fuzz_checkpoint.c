// libFuzzer harness of the model checkpoint reader: checkpoint_parse_header (header, magic, version,
// config, parameter count, file length) and params_check, the cores of checkpoint_read_config and
// checkpoint_read_params. Build and run: make fuzz (dev/fuzz/corpus/checkpoint holds the seeds).
#include "../../model.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Config c;
    if (checkpoint_parse_header(data, (int64_t)size, &c) != NULL) return 0;
    // accepted: the config is one the model can be built from and the parameters fill the file
    ParamSpec table[MAX_PARAMS];
    size_t n;
    param_table(&c, table, &n);
    if (validate_config(&c) != NULL || size != HEADER_BYTES + 4 * n) abort();
    float* params = (float*)malloc_check(4 * n);
    memcpy(params, data + HEADER_BYTES, 4 * n);
    params_check(params, n);
    free(params);
    return 0;
}
