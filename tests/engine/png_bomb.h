/* A PNG decompression bomb for the tests: a small file that declares a huge image.
 * Header-only; needs zlib. */
#ifndef SDE_TEST_PNG_BOMB_H
#define SDE_TEST_PNG_BOMB_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static inline void put_be32(unsigned char *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (24 - 8 * i));
}
static inline uint32_t get_be32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Appends a chunk (length, type, data, CRC) to out at *pos. */
static inline void put_chunk(unsigned char *out, size_t *pos, const char *type, const unsigned char *d,
                      uint32_t n) {
  put_be32(out + *pos, n);
  memcpy(out + *pos + 4, type, 4);
  if (n) memcpy(out + *pos + 8, d, n);
  put_be32(out + *pos + 8 + n, (uint32_t)crc32(crc32(0, (const unsigned char *)type, 4), d, n));
  *pos += 12 + n;
}

/* A decompression bomb: w x h 8-bit gray pixels, all zero, deflated (about 1000:1). */
static inline unsigned char *make_bomb_png(uint32_t w, uint32_t h, size_t *len) {
  z_stream z;
  memset(&z, 0, sizeof z);
  deflateInit(&z, 9);
  size_t cap = (size_t)h * (w + 1) / 500 + 4096;
  unsigned char *idat = malloc(cap), *row = calloc(w + 1, 1);
  z.next_out = idat;
  z.avail_out = (uInt)cap;
  for (uint32_t y = 0; y < h; y++) {
    z.next_in = row;
    z.avail_in = w + 1;
    deflate(&z, y + 1 == h ? Z_FINISH : Z_NO_FLUSH);
  }
  uint32_t n = (uint32_t)z.total_out;
  deflateEnd(&z);
  unsigned char *out = malloc(n + 64), ihdr[13] = {0};
  size_t pos = 8;
  memcpy(out, "\x89PNG\r\n\x1a\n", 8);
  put_be32(ihdr, w);
  put_be32(ihdr + 4, h);
  ihdr[8] = 8; /* bit depth; colour type 0 (gray), no interlace */
  put_chunk(out, &pos, "IHDR", ihdr, 13);
  put_chunk(out, &pos, "IDAT", idat, n);
  put_chunk(out, &pos, "IEND", NULL, 0);
  free(idat);
  free(row);
  *len = pos;
  return out;
}

/* Writes make_bomb_png(w, h) to path; returns its size in bytes (0 on failure). */
static inline size_t write_bomb_png(const char *path, uint32_t w, uint32_t h) {
  size_t len = 0;
  unsigned char *b = make_bomb_png(w, h, &len);
  FILE *f = fopen(path, "wb");
  size_t done = f ? fwrite(b, 1, len, f) : 0;
  if (f && fclose(f) != 0) done = 0;
  free(b);
  return done == len ? len : 0;
}

#endif
