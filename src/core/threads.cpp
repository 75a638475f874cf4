// OpenMP / OpenBLAS thread count.
#include "core/threads.h"

#include <cblas.h>  // openblas_set_num_threads (OpenBLAS extension)
#include <omp.h>

namespace million {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace million
