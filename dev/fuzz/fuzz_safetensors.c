// libFuzzer harness of the fla / Hugging Face readers: safetensors_parse (the core of `train_gla
// import`'s file reader: header length, header JSON, dtypes, shapes, offsets covering the data), the
// float32 conversion of every tensor it accepts, and the same bytes read as a config.json by
// json_parse and fla_config_parse (the config's refusals). Build and run: make fuzz.
#include "../../model.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    SafeTensors st;
    if (safetensors_parse(&st, data, size) == NULL) {
        // accepted: every tensor lies inside the file and converts
        for (int k = 0; k < st.n; k++) {
            const SafeTensor* t = &st.tensors[k];
            if (t->bytes < data || t->bytes + t->numel * SAFE_DTYPE_BYTES[t->dtype] > data + size) abort();
            float* out = (float*)malloc_check(t->numel * sizeof(float));
            safetensor_to_f32(t, out);
            free(out);
        }
    }
    safetensors_free(&st);
    Json j;
    if (json_parse(&j, data, size) == NULL) {
        Config c;
        int fuse_norm;
        if (fla_config_parse(&j, &c, &fuse_norm) == NULL && validate_config(&c) != NULL) abort();
    }
    json_free(&j);
    return 0;
}
