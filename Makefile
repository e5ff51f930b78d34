# Builds the CPU trainer, its tests, the data tools and (where nvcc exists) the CUDA trainer.
#   make train      build, prepare Tiny Shakespeare if missing, train the default model (~10 min, 2 cores)
#   make test       build and run the test suite
#   make test-sanitize  the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       libFuzzer on the checkpoint, tokenizer, shard and safetensors/config.json readers (clang; FUZZ_SECONDS each)
#   make data-gpt2  Tiny Shakespeare with GPT-2's tokenizer (GPT2_DIR=folder of encoder.json + vocab.bpe)
#   make data-bpe   Tiny Shakespeare with a BPE tokenizer learned from it (BPE_VOCAB=2048)
#   NO_OMP=1        build without OpenMP
#   make emu-check / emu-test  the CUDA programs checked on the CPU (dev/cuda/emu), no GPU needed
#   make cuda       (where nvcc is found) the CUDA trainer train_gla_cu and its tests test_gla_cu;
#                   CUDA_ARCH=sm_90 (default) picks the GPU, NVCC_WERROR=1 makes warnings errors (CI)
#   make cuda-dev   the kernel experiments dev/cuda/*.cu, each with its own correctness check
CC ?= cc
CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -Wno-missing-field-initializers -Wno-format-truncation
# a call to an undeclared function is an error, not a warning: C89's implicit int would truncate a
# pointer result (how dev/bench_matmul.c once crashed on OpenBLAS's char* functions)
CFLAGS += -Werror=implicit-function-declaration
# floating point never traps in these programs (no fenv): gcc may then evaluate both sides of a
# select, which lets the loops through logsigmoidf / log1p_fast vectorise (clang's default; no value
# changes)
CFLAGS += -fno-trapping-math
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
# the text for make data-bpe: $(TINYSHAKESPEARE), else the committed copy
TEXT = $(or $(TINYSHAKESPEARE),data/tinyshakespeare.txt)
BPE_VOCAB ?= 2048

.PHONY: all train test test-sanitize fuzz data data-gpt2 data-bpe clean cuda cuda-dev
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

# GFLOP/s of the C matmul on the model's shapes, with a correctness sweep; make dev/bench_matmul_blas
# puts OpenBLAS's sgemm beside it (apt-get install libopenblas0-openmp libopenblas-openmp-dev)
OPENBLAS_OMP = /usr/lib/x86_64-linux-gnu/openblas-openmp
dev/bench_matmul: dev/bench_matmul.c train_gla.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)
dev/bench_matmul_blas: dev/bench_matmul.c train_gla.c model.h
	$(CC) $(CFLAGS) -DWITH_CBLAS -I/usr/include/x86_64-linux-gnu/openblas-openmp $< -o $@ $(LDLIBS) \
	    $(OPENBLAS_OMP)/libopenblas.so.0 -Wl,-rpath,$(OPENBLAS_OMP)

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

# the main job: about 1M parameters, GLA 3:1 attention, for at most 10 minutes on 2 cores; continues
# the run in out/default when there is one (delete that folder to start over)
train: train_gla $(DATA)
	./train_gla --max-time 570 --out out/default $(if $(wildcard out/default/DONE_*),--resume 1)

# the tokenizer tests run the data tools
test: test_gla train_gla $(DATA_TOOLS)
	./test_gla

# The whole suite built with AddressSanitizer and UndefinedBehaviorSanitizer into build/sanitize/,
# the programs the tests run included (TEST_BIN_DIR); the first finding stops it with a report.
SAN_DIR = build/sanitize
SAN_FLAGS = -O2 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_BINS = $(SAN_DIR)/test_gla $(SAN_DIR)/train_gla $(addprefix $(SAN_DIR)/,$(DATA_TOOLS))

$(SAN_DIR)/test_gla: train_gla.c
$(SAN_DIR)/%: %.c model.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_FLAGS) $< -o $@ $(LDLIBS)

test-sanitize: $(SAN_BINS)
	TEST_BIN_DIR=$(SAN_DIR) ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(SAN_DIR)/test_gla

# libFuzzer (clang) on the readers' cores: FUZZ_SECONDS per harness, starting from the committed
# seeds in dev/fuzz/corpus/ (read only: what the fuzzer finds goes to build/fuzz/corpus/). A crash
# leaves its input as build/fuzz/crash-*; replay it with build/fuzz/<reader> <file>.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_READERS = checkpoint tokenizer shard safetensors
FUZZ_FLAGS = -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_FLAGS += -Werror=implicit-function-declaration
build/fuzz/%: dev/fuzz/fuzz_%.c model.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $< -o $@ -lm

fuzz: $(addprefix build/fuzz/,$(FUZZ_READERS))
	for r in $(FUZZ_READERS); do \
	    mkdir -p build/fuzz/corpus/$$r && \
	    build/fuzz/$$r -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
	        -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus/$$r dev/fuzz/corpus/$$r || exit 1; \
	done

# writes the seed corpus (dev/fuzz/corpus/, committed): dev/fuzz/make_corpus dev/fuzz/corpus
dev/fuzz/make_corpus: dev/fuzz/make_corpus.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

# ----------------------------------------------------------------------------
# CUDA, only where nvcc is found. train_gla_cu: the trainer on the GPU (train_gla.cu); test_gla_cu:
# its tests, with train_gla.c compiled beside it as the CPU twin (OpenMP
# for the host compiler: the twin runs at realistic shapes). fp32, cuBLAS.
CUDA_ARCH ?= sm_90
NVCC_FLAGS ?= -O3
NVCC_FLAGS += -std=c++17 -arch=$(CUDA_ARCH)
# the host compiler's warnings as the C programs' (model.h's bounded snprintf names included)
NVCC_FLAGS += -Xcompiler -Wall,-Wno-unused-parameter,-Wno-unused-function,-Wno-format-truncation
ifneq ($(NO_OMP),1)
  NVCC_FLAGS += -Xcompiler -fopenmp
  NVCC_OMP_LIBS = -lgomp
endif
ifeq ($(NVCC_WERROR),1)
  NVCC_FLAGS += -Werror all-warnings
endif
NVCC_LDLIBS = -lcublas -lm $(NVCC_OMP_LIBS)
DEV_CUDA = $(patsubst %.cu,%,$(wildcard dev/cuda/*.cu))

cuda: train_gla_cu test_gla_cu
cuda-dev: $(DEV_CUDA)

ifneq ($(NVCC),)
train_gla_cu: train_gla.cu model.h
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LDLIBS)

test_gla_cu: test_gla.cu train_gla.cu train_gla.c model.h
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LDLIBS)

# kernel experiments: one file each, with train_gla.cu's kernels (#define TESTING, #include it)
dev/cuda/%: dev/cuda/%.cu dev/cuda/common.cuh train_gla.cu model.h
	$(NVCC) $(NVCC_FLAGS) $< -o $@ $(NVCC_LDLIBS)
else
.PHONY: train_gla_cu test_gla_cu $(DEV_CUDA)
train_gla_cu test_gla_cu $(DEV_CUDA):
	@echo "error: nvcc not found: $@ needs the CUDA toolkit (put its bin/ on PATH, e.g. /usr/local/cuda/bin)" >&2
	@exit 1
endif

# The CUDA programs on the CPU, through dev/cuda/emu (each CUDA thread a fiber, cuBLAS in plain loops):
# a check that the CUDA code computes the right thing, on a machine without a GPU. Needs g++ and
# python3, not nvcc. emu-check: every kernel family and every mixer's whole model against the CPU
# program (~30 s); emu-test: test_gla.cu, the whole GPU suite (~3 min on 2 cores).
.PHONY: emu-check emu-test
emu-check:
	dev/cuda/emu/run.sh check
emu-test:
	dev/cuda/emu/run.sh test

clean:
	rm -f train_gla test_gla $(DATA_TOOLS) dev/bench_mixers dev/bench_matmul dev/bench_matmul_blas dev/fuzz/make_corpus
	rm -f train_gla_cu test_gla_cu $(DEV_CUDA)
	rm -rf build
