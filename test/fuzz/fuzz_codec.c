/*
 * libFuzzer target for codec_decode: arbitrary bytes as a conn receives them, frames decoded
 * back to back. Each decoded frame must be consistent (its length prefix counts its UTF-16
 * units, every strict prefix of it is NEED_MORE) and must re-encode to ASCII that decodes to an
 * equal tree. The incremental decoder (struct codec_decoder), fed the same bytes in slices of
 * sizes taken from the input, must agree frame for frame and end the same way.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define FUZZ_LIMIT 4096 /* max_units: small, so the limit paths are reached */

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_codec.c:%d: %s\n", __LINE__, #cond);                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Tree equality through an encode/decode cycle. Numbers that overflow a double decode as
 * infinities and print as null, as JSON.stringify prints them; that is the one allowed change.
 */
static int
same_tree(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsNumber(a) && !isfinite(a->valuedouble)) {
        return cJSON_IsNull(b);
    }
    if ((a->type & 0xff) != (b->type & 0xff)) {
        return 0;
    }
    if ((a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0)) {
        return 0;
    }
    if (cJSON_IsNumber(a)) {
        return a->valuedouble == b->valuedouble;
    }
    if (cJSON_IsString(a)) {
        return strcmp(a->valuestring, b->valuestring) == 0;
    }
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next) {
        if (!same_tree(x, y)) {
            return 0;
        }
    }
    return x == NULL && y == NULL;
}

/* The same tree, decoded twice: every number bit for bit (infinities included, which
 * cJSON_Compare never finds equal). */
static int
identical(const cJSON *a, const cJSON *b)
{
    if ((a->type & 0xff) != (b->type & 0xff) || (a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0)) {
        return 0;
    }
    if (cJSON_IsNumber(a)) {
        return memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) == 0;
    }
    if (cJSON_IsString(a)) {
        return strcmp(a->valuestring, b->valuestring) == 0;
    }
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next) {
        if (!identical(x, y)) {
            return 0;
        }
    }
    return x == NULL && y == NULL;
}

static void
check_round_trip(const cJSON *tree)
{
    size_t len;
    char *enc = codec_encode(tree, &len);
    FUZZ_ASSERT(enc != NULL && strlen(enc) == len);
    for (size_t i = 0; i < len; i++) {
        FUZZ_ASSERT((unsigned char)enc[i] < 0x80);
    }
    char *hash = strchr(enc, '#');
    FUZZ_ASSERT(hash != NULL);
    FUZZ_ASSERT(strtoull(enc, NULL, 10) == len - (size_t)(hash + 1 - enc));

    struct codec_frame back;
    const char *why = NULL;
    int st = codec_decode(enc, len, SIZE_MAX, &back, &why, NULL);
    FUZZ_ASSERT(st == CODEC_COMPLETE && back.consumed == len);
    FUZZ_ASSERT(same_tree(tree, back.json));

    /* Encoding is stable: the decoded copy encodes to the same bytes. */
    size_t len2;
    char *enc2 = codec_encode(back.json, &len2);
    FUZZ_ASSERT(len2 == len && memcmp(enc, enc2, len) == 0);
    free(enc2);
    cJSON_Delete(back.json);
    free(enc);
}

/*
 * Feeds buf to a codec_decoder in slices (each an exact-size copy) and checks that it yields
 * the trees codec_decode yielded, then ends as it did (last: CODEC_ERROR with the same reason,
 * or CODEC_NEED_MORE with a partial frame iff bytes were left).
 */
static void
check_stream(const char *buf, size_t size, cJSON **trees, size_t ntrees, int last,
             const char *last_why, bool left_over)
{
    struct codec_decoder d;
    codec_decoder_init(&d, FUZZ_LIMIT);
    size_t got = 0, off = 0, k = 0;
    int st = CODEC_NEED_MORE;
    const char *why = NULL;
    while (off < size && st != CODEC_ERROR) {
        size_t slice = 1 + (size_t)((unsigned char)buf[k++ % size] % 97);
        if (slice > size - off) {
            slice = size - off;
        }
        char *copy = malloc(slice);
        FUZZ_ASSERT(copy != NULL);
        memcpy(copy, buf + off, slice);
        size_t at = 0;
        while (at < slice) {
            struct codec_frame f;
            size_t used = 0;
            st = codec_decoder_feed(&d, copy + at, slice - at, &f, &why, &used);
            FUZZ_ASSERT(used <= slice - at);
            at += used;
            if (st != CODEC_COMPLETE) {
                FUZZ_ASSERT(f.json == NULL && (st == CODEC_ERROR || at == slice));
                break;
            }
            FUZZ_ASSERT(got < ntrees && identical(f.json, trees[got]));
            got++;
            cJSON_Delete(f.json);
        }
        free(copy);
        off += slice;
    }
    FUZZ_ASSERT(got == ntrees);
    if (last == CODEC_ERROR) {
        FUZZ_ASSERT(st == CODEC_ERROR && strcmp(why, last_why) == 0);
    } else {
        FUZZ_ASSERT(st != CODEC_ERROR && codec_decoder_partial(&d) == left_over);
    }
    codec_decoder_cleanup(&d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data; /* libFuzzer's buffer is exactly size bytes */
    size_t off = 0, ntrees = 0;
    cJSON **trees = calloc(size + 1, sizeof(*trees)); /* a frame takes at least 3 bytes */
    int last = CODEC_NEED_MORE;
    const char *last_why = "";
    FUZZ_ASSERT(trees != NULL);
    while (off < size) {
        struct codec_frame f;
        const char *why = NULL;
        size_t need = 0, left = size - off;
        int st = codec_decode(buf + off, left, FUZZ_LIMIT, &f, &why, &need);
        if (st == CODEC_NEED_MORE) {
            FUZZ_ASSERT(f.json == NULL && need > left);
            break;
        }
        if (st == CODEC_ERROR) {
            FUZZ_ASSERT(f.json == NULL && why != NULL && *why != '\0');
            last = CODEC_ERROR;
            last_why = why;
            break;
        }
        FUZZ_ASSERT(st == CODEC_COMPLETE && f.json != NULL);
        FUZZ_ASSERT(f.consumed > 0 && f.consumed <= left);

        /* The prefix counts the body's UTF-16 units, within the limit. */
        const char *hash = memchr(buf + off, '#', f.consumed);
        FUZZ_ASSERT(hash != NULL);
        size_t body = (size_t)(hash + 1 - (buf + off));
        long long units = codec_utf16_units(hash + 1, f.consumed - body);
        FUZZ_ASSERT(units > 0 && units <= FUZZ_LIMIT);
        FUZZ_ASSERT((unsigned long long)units == strtoull(buf + off, NULL, 10));

        /* A frame never completes early, nor fails when cut: every strict prefix waits. */
        size_t cuts[] = {0, body - 1, body, f.consumed / 2, f.consumed - 1};
        for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
            struct codec_frame p;
            FUZZ_ASSERT(codec_decode(buf + off, cuts[c], FUZZ_LIMIT, &p, &why, NULL) ==
                        CODEC_NEED_MORE);
        }
        check_round_trip(f.json);
        trees[ntrees++] = f.json;
        off += f.consumed;
    }
    check_stream(buf, size, trees, ntrees, last, last_why, last != CODEC_ERROR && off < size);
    for (size_t i = 0; i < ntrees; i++) {
        cJSON_Delete(trees[i]);
    }
    free(trees);
    return 0;
}
