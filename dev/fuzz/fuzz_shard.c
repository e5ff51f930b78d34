// libFuzzer harness of the token shard readers: shard_parse (the core of shard_load: header, tokenizer fingerprint, token
// count against the length, token ids against the vocabulary), for a byte-level and a GPT-2-sized
// vocabulary; and targets_parse (the core of targets_load, MQAR's target files), the same bytes
// read as the targets of a shard of as many tokens as they claim. Build and run: make fuzz.
#include "../../model.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const int vocabs[2] = {256, 50257};
    for (int i = 0; i < 2; i++) {
        size_t n;
        if (shard_parse(data, size, vocabs[i], i ? 0x5eed5eedu : 0, &n) == NULL && size != HEADER_BYTES + 2 * n) abort();
    }
    int32_t count = 0, E = 0;
    if (size >= 12) memcpy(&count, data + 8, 4);
    if (count >= 0 && targets_parse(data, size, (size_t)count, 64, &E) == NULL &&
        (size != HEADER_BYTES + 2 * (size_t)count || E < 1 || count % E != 0))
        abort();
    return 0;
}
