# cython: language_level=3
# The chain's random numbers: xoshiro256** (Blackman & Vigna) seeded through splitmix64,
# the same stream as _reference.Xoshiro256, so a seed draws the same tokens in both.
#
# One rng_t per request, a field of the Chain that owns it (_chain.pxd), which seeds it
# once; the kernels that draw (xtc and the finals in _stages) advance it. It lives in this
# header, not in _chain, so that the kernels do not depend on their owner; three small
# inline functions need no module of their own.
#
# How it fails: it doesn't. Pure integer arithmetic on rng_t, `noexcept nogil`.
from libc.stdint cimport uint64_t


cdef struct rng_t:
    uint64_t s[4]


cdef inline uint64_t rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline void rng_seed(rng_t* r, uint64_t seed) noexcept nogil:
    cdef uint64_t z
    cdef int i
    for i in range(4):               # splitmix64
        seed += <uint64_t> 0x9E3779B97F4A7C15
        z = seed
        z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
        r.s[i] = z ^ (z >> 31)


cdef inline double rng_uniform(rng_t* r) noexcept nogil:
    # [0, 1), 53 bits
    cdef uint64_t result = rotl(r.s[1] * 5, 7) * 9
    cdef uint64_t t = r.s[1] << 17
    r.s[2] ^= r.s[0]
    r.s[3] ^= r.s[1]
    r.s[1] ^= r.s[2]
    r.s[0] ^= r.s[3]
    r.s[2] ^= t
    r.s[3] = rotl(r.s[3], 45)
    return <double> (result >> 11) * (1.0 / 9007199254740992.0)
