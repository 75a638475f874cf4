# Finds the Debian packages million builds against; each failure names the package to install
# (scripts/setup.sh installs all of them).

function(million_require found package what)
  if(NOT ${found})
    message(FATAL_ERROR "million needs ${what}: install the Debian package '${package}' "
                        "(or run scripts/setup.sh, which installs everything).")
  endif()
endfunction()

find_package(OpenMP)
million_require(OpenMP_CXX_FOUND libgomp1 "OpenMP (comes with g++)")

find_package(fmt QUIET)
if(NOT fmt_FOUND AND MILLION_FMT_INCLUDE_DIR)
  # Header-only fmt from an unpacked libfmt-dev (scripts/gpu-deps.sh), for machines without it.
  add_library(fmt::fmt INTERFACE IMPORTED)
  target_include_directories(fmt::fmt INTERFACE ${MILLION_FMT_INCLUDE_DIR})
  target_compile_definitions(fmt::fmt INTERFACE FMT_HEADER_ONLY=1)
  set(fmt_FOUND TRUE)
endif()
million_require(fmt_FOUND libfmt-dev "the fmt formatting library")

if(MILLION_BUILD_TESTS)
  find_package(GTest QUIET)
  million_require(GTest_FOUND libgtest-dev "GoogleTest")
endif()

# Model files (million_io) are read in the CUDA-only build too.
find_package(nlohmann_json 3 QUIET)
million_require(nlohmann_json_FOUND nlohmann-json3-dev "nlohmann-json")

if(NOT MILLION_CPU_ENGINE)
  return()
endif()

find_package(PkgConfig)
million_require(PKG_CONFIG_FOUND pkg-config "pkg-config")


find_package(CLI11 QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp)
  million_require(CLI11_INCLUDE_DIR libcli11-dev "CLI11")
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()

pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
million_require(SENTENCEPIECE_FOUND libsentencepiece-dev "SentencePiece")
add_library(million::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)

# PCRE2 (8-bit, Unicode properties, JIT) for the byte-level BPE pre-tokenizer regexes.
pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
million_require(PCRE2_FOUND libpcre2-dev "PCRE2")
add_library(million::pcre2 ALIAS PkgConfig::PCRE2)

# OpenBLAS, OpenMP build: GEMM called inside our OpenMP regions then runs on the calling thread
# instead of starting a second thread pool that fights ours for the cores.
find_library(MILLION_OPENBLAS_LIB NAMES openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
million_require(MILLION_OPENBLAS_LIB libopenblas-openmp-dev "OpenBLAS built with OpenMP")
find_path(MILLION_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-openmp)
million_require(MILLION_CBLAS_INCLUDE libopenblas-dev "the CBLAS header")
add_library(million::blas INTERFACE IMPORTED)
target_link_libraries(million::blas INTERFACE ${MILLION_OPENBLAS_LIB})
target_include_directories(million::blas INTERFACE ${MILLION_CBLAS_INCLUDE})

# FAISS (k-means, OPQ): Debian ships only the static library. Its exported CMake target links the
# system libblas.so.3, which can be a second OpenBLAS build (pthreads) beside ours; we link the
# archive with our OpenBLAS instead, which provides BLAS and LAPACK.
find_path(MILLION_FAISS_INCLUDE faiss/Clustering.h)
find_library(MILLION_FAISS_LIB NAMES libfaiss.a faiss)
if(NOT MILLION_FAISS_INCLUDE OR NOT MILLION_FAISS_LIB)
  million_require(FALSE libfaiss-dev "FAISS")
endif()
add_library(million::faiss INTERFACE IMPORTED)
target_include_directories(million::faiss INTERFACE ${MILLION_FAISS_INCLUDE})
target_link_libraries(million::faiss INTERFACE ${MILLION_FAISS_LIB} million::blas OpenMP::OpenMP_CXX)

if(MILLION_BUILD_BENCH)
  find_package(benchmark QUIET)
  million_require(benchmark_FOUND libbenchmark-dev "Google Benchmark")
endif()
