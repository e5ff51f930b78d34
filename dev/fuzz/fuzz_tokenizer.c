// libFuzzer harness of the tokenizer reader: tokenizer_parse (the core of tokenizer_load). A file it
// accepts must then index and encode any text into ids that decode back to that text, since
// encoding relies on what tokenizer_check promises. Build and run: make fuzz.
#include "../../model.h"

// encode -> decode gives text[0..n) back; aborts (a finding) when it does not
static void round_trip(const Tokenizer* t, const unsigned char* text, size_t n) {
    int* ids;
    size_t m = tokenizer_encode_bytes(t, text, n, &ids);
    unsigned char* back;
    size_t nb = tokenizer_decode(t, ids, m, &back);
    if (m > n || nb != n || memcmp(back, text, n) != 0) abort();
    free(ids);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Tokenizer t;
    if (tokenizer_parse(&t, data, size) != NULL) return 0;
    tokenizer_index(&t);
    static const char text[] = "Hello, world! I'll 123 4.5 h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac   \n\t\xff\xfe\xc3";
    round_trip(&t, (const unsigned char*)text, sizeof(text) - 1);
    round_trip(&t, data, size < 512 ? size : 512); // the file's own bytes as text
    tokenizer_free(&t);
    return 0;
}
