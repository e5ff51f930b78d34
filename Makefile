# Builds the CPU trainer, its tests, the data tools and (where nvcc exists) the CUDA trainer.
#   make train      build, prepare Tiny Shakespeare if missing, train the default model (~10 min, 2 cores)
#   make test       build and run the test suite
#   make data-gpt2  Tiny Shakespeare with GPT-2's tokenizer (GPT2_DIR=folder of encoder.json + vocab.bpe)
#   make data-bpe   Tiny Shakespeare with a BPE tokenizer learned from it (BPE_VOCAB=2048)
#   NO_OMP=1        build without OpenMP
CC ?= cc
CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -Wno-missing-field-initializers -Wno-format-truncation
LDLIBS = -lm

# OpenMP: gcc/clang with -fopenmp where it links; macOS clang needs Homebrew's libomp
ifeq ($(NO_OMP),1)
  $(info OpenMP disabled (NO_OMP=1))
else ifeq ($(shell echo 'int main(){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo ok),ok)
  CFLAGS += -fopenmp
  $(info OpenMP found: building with -fopenmp)
else ifneq ($(wildcard /opt/homebrew/opt/libomp/lib/libomp.dylib),)
  CFLAGS += -Xclang -fopenmp -I/opt/homebrew/opt/libomp/include
  LDLIBS += -L/opt/homebrew/opt/libomp/lib -lomp
  $(info OpenMP found: Homebrew libomp)
else
  $(info OpenMP not found: building single-threaded)
endif

NVCC := $(shell command -v nvcc 2>/dev/null)

DATA = data/tinyshakespeare/tiny_shakespeare_train.bin
TOKENIZER = data/tokenizer_bytes.bin
DATA_TOOLS = data/prepare data/tokenizer_gpt2 data/train_bpe data/tokenize data/mqar
# the text for make data-bpe: $(TINYSHAKESPEARE), else the copy data/prepare downloads
TEXT = $(or $(TINYSHAKESPEARE),data/tinyshakespeare/input.txt)
BPE_VOCAB ?= 2048

.PHONY: all train test data data-gpt2 data-bpe clean
all: train_gla test_gla $(DATA_TOOLS)

train_gla: train_gla.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

test_gla: test_gla.c train_gla.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

$(DATA_TOOLS): %: %.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

# time per token of each mixer's forward + backward at T = 512, 2048, 8192 (README table)
dev/bench_mixers: dev/bench_mixers.c train_gla.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

$(DATA) $(TOKENIZER): | data/prepare
	./data/prepare

data: $(DATA)

data/tokenizer_gpt2.bin: data/tokenizer_gpt2
	./data/tokenizer_gpt2 $(GPT2_DIR)

data-gpt2: data/prepare data/tokenizer_gpt2.bin
	./data/prepare -t gpt2

data-bpe: data/prepare data/train_bpe $(DATA)
	./data/train_bpe -i $(TEXT) -v $(BPE_VOCAB) -o data/tokenizer_bpe$(BPE_VOCAB).bin
	./data/prepare -t data/tokenizer_bpe$(BPE_VOCAB).bin

# the main job: about 1M parameters, GLA 3:1 attention, for at most 10 minutes on 2 cores
train: train_gla $(DATA)
	./train_gla --max-time 570 --out out/default

# the tokenizer tests run the data tools
test: test_gla train_gla $(DATA_TOOLS)
	./test_gla

clean:
	rm -f train_gla test_gla $(DATA_TOOLS) dev/bench_mixers
