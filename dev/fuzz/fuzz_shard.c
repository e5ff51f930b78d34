// libFuzzer harness of the token shard reader: shard_parse (the core of shard_load: header, token
// count against the length, token ids against the vocabulary), for a byte-level and a GPT-2-sized
// vocabulary. Build and run: make fuzz.
#include "../../model.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const int vocabs[2] = {256, 50257};
    for (int i = 0; i < 2; i++) {
        size_t n;
        if (shard_parse(data, size, vocabs[i], &n) == NULL && size != HEADER_BYTES + 2 * n) abort();
    }
    return 0;
}
