// Thread count for OpenMP regions and OpenBLAS (the OpenMP build shares the same pool).
#pragma once

namespace million {

/// Sets the threads used by kernels and GEMMs; n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace million
