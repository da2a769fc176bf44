# cython: language_level=3
"""The CPU features that decide which kernel build runs (fastconv._isa). Built at the baseline.

GCC's and Clang's __builtin_cpu_supports report a feature only when the OS also saves its
registers (XCR0 for AVX and AVX-512), so a feature reported here is usable."""

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define FC_CPU_X86 1
    static int fc_cpu_feature(int i) {
        __builtin_cpu_init();
        switch (i) {
        case 0: return __builtin_cpu_supports("sse2");
        case 1: return __builtin_cpu_supports("avx");
        case 2: return __builtin_cpu_supports("avx2");
        case 3: return __builtin_cpu_supports("fma");
        case 4: return __builtin_cpu_supports("avx512f");
        case 5: return __builtin_cpu_supports("avx512vl");
        case 6: return __builtin_cpu_supports("avx512bw");
        case 7: return __builtin_cpu_supports("avx512dq");
        default: return 0;
        }
    }
    #else
    #define FC_CPU_X86 0
    static int fc_cpu_feature(int i) { (void)i; return 0; }
    #endif
    #if defined(__aarch64__)
    #define FC_CPU_AARCH64 1
    #else
    #define FC_CPU_AARCH64 0
    #endif
    """
    int fc_cpu_feature(int i)
    int FC_CPU_X86
    int FC_CPU_AARCH64

# The order of fc_cpu_feature's cases.
X86_FEATURES = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq")


def features():
    """{feature name: bool} for the features fastconv's targets need (x86-64: sse2 ... avx512dq;
    aarch64: neon, which is its baseline); empty on other CPUs."""
    if FC_CPU_X86:
        return {name: bool(fc_cpu_feature(i)) for i, name in enumerate(X86_FEATURES)}
    if FC_CPU_AARCH64:
        return {"neon": True}
    return {}
