/* The per-bin products of the FFT convolution (models/fast_conv.py) on the CPU, for calls without gradients.

   out[b, o, d] = sum over taps t and input channels i of x[b, i, d + t - pad] * g[t, i, o], per frequency bin,
   a complex multiply-add; input depths outside [0, depth) read zero. The transforms' layout is kept: x and out are
   complex64 planes [batch, channels, depth, bins] (re/im interleaved), so no transposition is needed around the
   products (the batched-matrix-product path copies to and from a bins-major layout). The weight spectrum g is
   laid out per chunk of 8 bins: [chunks][taps][c_in][c_out][8 complex], zeros past the last bin
   (models/spectral_kernel.py: chunk_layout).

   Register blocking: a chunk of 8 bins of DEPTHS output depths x OUTPUTS output channels is accumulated in
   registers over all taps and input channels; each input row is loaded once per input channel and each weight
   vector once per block. Chunks are visited in blocks of BLOCK so that the rows they read stay in cache.
   GCC / Clang vector extensions, no intrinsics: the compiler maps a 16-float vector onto the machine's registers
   (one AVX-512 register, two AVX2 ones, four NEON ones). */

#include <string.h>

typedef float vec __attribute__((vector_size(64)));  /* 8 complex numbers, re/im interleaved */
typedef int lanes __attribute__((vector_size(64)));

enum { CHUNK = 8, FLOATS = 2 * CHUNK, DEPTHS = 4, OUTPUTS = 3, MAX_TAPS = 7, BLOCK = 8 };

int spectral_products_max_taps(void) { return MAX_TAPS; }

static inline vec load(const float *p, long n) {
    vec v = {0};
    if (n == FLOATS) memcpy(&v, p, sizeof v);
    else memcpy(&v, p, n * sizeof(float));
    return v;
}

static inline void store(float *p, vec v, long n) {
    if (n == FLOATS) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, n * sizeof(float));
}

/* chunks [chunk_begin, chunk_end) of `bins`; returns 0, or -1 if taps > MAX_TAPS */
int spectral_products(const float *x, const float *g, float *out, long batch, long c_in, long c_out, long depth,
                      long depth_out, long taps, long pad, long bins, long chunk_begin, long chunk_end) {
    if (taps > MAX_TAPS) return -1;
    const long row = 2 * bins, weights_per_chunk = taps * c_in * c_out * FLOATS;
    const vec zero = {0}, sign = {-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1};
    const lanes real = {0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14};
    const lanes imag = {1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15};
    const lanes swap = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
    for (long start = chunk_begin; start < chunk_end; start += BLOCK) {
        const long stop = start + BLOCK < chunk_end ? start + BLOCK : chunk_end;
        for (long b = 0; b < batch; b++)
        for (long d0 = 0; d0 < depth_out; d0 += DEPTHS)
        for (long o0 = 0; o0 < c_out; o0 += OUTPUTS)
        for (long chunk = start; chunk < stop; chunk++) {
            const long f = chunk * FLOATS, n = row - f < FLOATS ? row - f : FLOATS;
            const float *gc = g + chunk * weights_per_chunk;
            vec acc[OUTPUTS][DEPTHS];
            for (int a = 0; a < OUTPUTS; a++)
                for (int j = 0; j < DEPTHS; j++) acc[a][j] = zero;
            for (long i = 0; i < c_in; i++) {
                /* x = xr + i xi, g = gr + i gi: x g = (xr, xr) (gr, gi) + (-xi, xi) (gi, gr) per bin */
                vec xr[DEPTHS + MAX_TAPS - 1], xi[DEPTHS + MAX_TAPS - 1];
                for (long r = 0; r < DEPTHS + taps - 1; r++) {
                    const long src = d0 + r - pad;
                    const vec v = src >= 0 && src < depth ? load(x + ((b * c_in + i) * depth + src) * row + f, n)
                                                          : zero;
                    xr[r] = __builtin_shuffle(v, real);
                    xi[r] = __builtin_shuffle(v, imag) * sign;
                }
                for (long t = 0; t < taps; t++) {
                    const float *gp = gc + ((t * c_in + i) * c_out + o0) * FLOATS;
                    for (int a = 0; a < OUTPUTS && o0 + a < c_out; a++) {
                        vec gv, gs;
                        memcpy(&gv, gp + a * FLOATS, sizeof gv);
                        gs = __builtin_shuffle(gv, swap);
                        for (int j = 0; j < DEPTHS; j++) {
                            acc[a][j] += xr[j + t] * gv;
                            acc[a][j] += xi[j + t] * gs;
                        }
                    }
                }
            }
            for (int a = 0; a < OUTPUTS && o0 + a < c_out; a++)
                for (int j = 0; j < DEPTHS && d0 + j < depth_out; j++)
                    store(out + ((b * c_out + o0 + a) * depth_out + d0 + j) * row + f, acc[a][j], n);
        }
    }
    return 0;
}
