/*
 * Unit tests of the NestJS framing codec: every valid frame whole, byte by byte and split at
 * every offset (alone and pipelined), UTF-16 length accounting, encoding, and malformed input.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "harness.h"

#define BIG SIZE_MAX /* a frame limit that never triggers */

struct frame {
    char label[96]; /* from nest_frames.txt, or a synthetic name */
    char *bytes;    /* exact wire bytes */
    size_t len;     /* their count */
};

static struct frame frames[256];
static size_t nframes;
static bool use_decoder; /* receive() through struct codec_decoder, as conn.c does */

static void add_frame(const char *label, const char *bytes, size_t len);
static void load_frames(void);
static void free_frames(void);

/* Decodes from an exact-size heap copy, so that ASan catches any read past len. */
static int
decode_copy(const char *buf, size_t len, size_t max, struct codec_frame *out, const char **why,
            size_t *need)
{
    char *copy = xmalloc(len);
    memcpy(copy, buf, len);
    int st = codec_decode(copy, len, max, out, why, need);
    free(copy);
    return st;
}

static void
add_frame(const char *label, const char *bytes, size_t len)
{
    if (nframes == ARRAY_SIZE(frames)) {
        return;
    }
    snprintf(frames[nframes].label, sizeof(frames[nframes].label), "%s", label);
    frames[nframes].bytes = xstrndup(bytes, len);
    frames[nframes].len = len;
    nframes++;
}

/* Frames Nest produced (test/data/nest_frames.txt) plus synthetic ones with wide characters. */
static void
load_frames(void)
{
    if (nframes > 0) {
        return;
    }
    atexit(free_frames);
    const char *dir = getenv("CHANCED_TEST_DATA") ? getenv("CHANCED_TEST_DATA") : "test/data";
    char path[512];
    snprintf(path, sizeof(path), "%s/nest_frames.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s (run from the project root)", path);
    char line[8192];
    while (f && fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        CHECK(n > 0 && line[n - 1] == '\n', "line too long or unterminated in %s", path);
        line[--n] = '\0';
        if (n == 0 || line[0] == '#') {
            continue;
        }
        char *tab = strchr(line, '\t');
        CHECK(tab != NULL, "no TAB in line: %.40s", line);
        if (tab) {
            *tab = '\0';
            add_frame(line, tab + 1, strlen(tab + 1));
        }
    }
    if (f) {
        fclose(f);
    }
    CHECK(nframes >= 40, "only %zu frames in %s", nframes, path);
    static const char *synthetic[] = {
        "3#\"\xc3\xa9\"",                                   /* é: 2 bytes, 1 unit */
        "3#\"\xe2\x82\xac\"",                               /* €: 3 bytes, 1 unit */
        "4#\"\xf0\x9f\x98\x80\"",                           /* 😀: 4 bytes, 2 units */
        "9#[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x61\"]", /* all four widths */
        "2#{}",
        "1#0",
        "4#null",
        "5#{}  \n", /* whitespace after the value, inside the length */
    };
    for (size_t i = 0; i < ARRAY_SIZE(synthetic); i++) {
        char label[32];
        snprintf(label, sizeof(label), "synthetic.%zu", i);
        add_frame(label, synthetic[i], strlen(synthetic[i]));
    }
}

/* The declared length of a frame (digits before '#'). */
static unsigned long long
declared_of(const struct frame *fr)
{
    return strtoull(fr->bytes, NULL, 10);
}

static void
test_nest_frames_whole(void)
{
    load_frames();
    for (size_t i = 0; i < nframes; i++) {
        struct codec_frame out;
        const char *why = NULL;
        int st = decode_copy(frames[i].bytes, frames[i].len, BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE, "%s: status %d (%s)", frames[i].label, st, why ? why : "");
        CHECK(out.consumed == frames[i].len, "%s: consumed %zu of %zu", frames[i].label,
              out.consumed, frames[i].len);
        const char *hash = strchr(frames[i].bytes, '#');
        size_t body = frames[i].len - (size_t)(hash + 1 - frames[i].bytes);
        long long units = codec_utf16_units(hash + 1, body);
        CHECK(units >= 0 && (unsigned long long)units == declared_of(&frames[i]),
              "%s: %lld UTF-16 units, declared %llu", frames[i].label, units,
              declared_of(&frames[i]));
        /* The limit is inclusive: exactly the declared length passes, one less fails. */
        if (st == CODEC_COMPLETE) {
            cJSON_Delete(out.json);
            st = decode_copy(frames[i].bytes, frames[i].len, (size_t)declared_of(&frames[i]), &out,
                             &why, NULL);
            CHECK(st == CODEC_COMPLETE, "%s: limit == length refused", frames[i].label);
            cJSON_Delete(out.json);
            st = decode_copy(frames[i].bytes, frames[i].len, (size_t)declared_of(&frames[i]) - 1,
                             &out, &why, NULL);
            CHECK(st == CODEC_ERROR, "%s: limit == length - 1 accepted", frames[i].label);
        }
    }
}

/* Every strict prefix is NEED_MORE with a sane lower bound; the whole frame is COMPLETE. */
static void
test_byte_by_byte(void)
{
    load_frames();
    for (size_t i = 0; i < nframes; i++) {
        const struct frame *fr = &frames[i];
        for (size_t k = 0; k < fr->len; k++) {
            struct codec_frame out;
            const char *why = NULL;
            size_t need = 0;
            int st = decode_copy(fr->bytes, k, BIG, &out, &why, &need);
            CHECK(st == CODEC_NEED_MORE, "%s: prefix %zu: status %d (%s)", fr->label, k, st,
                  why ? why : "");
            CHECK(need > k && need <= fr->len, "%s: prefix %zu: need %zu, frame %zu", fr->label, k,
                  need, fr->len);
            if (st == CODEC_COMPLETE) {
                cJSON_Delete(out.json);
            }
        }
    }
}

/* Feeds one chunk (an exact-size heap copy, so ASan catches a read past it) to d, taking
 * every frame it completes; returns frames taken, or stops at the first error. */
static size_t
feed_chunk(struct codec_decoder *d, const char *chunk, size_t len, cJSON **out, size_t max_out,
           size_t got, const char **err)
{
    char *copy = xmalloc(len ? len : 1);
    memcpy(copy, chunk, len);
    size_t off = 0, n = 0;
    while (off < len) {
        struct codec_frame fr;
        const char *why = NULL;
        size_t used = 0;
        int st = codec_decoder_feed(d, copy + off, len - off, &fr, &why, &used);
        CHECK(used <= len - off, "used %zu of %zu", used, len - off);
        off += used;
        if (st == CODEC_ERROR) {
            *err = why;
            break;
        }
        if (st == CODEC_NEED_MORE) {
            CHECK(off == len, "NEED_MORE with %zu bytes unused", len - off);
            break;
        }
        CHECK(used > 0 && fr.consumed > 0, "a frame from no bytes");
        if (got + n < max_out) {
            out[got + n] = fr.json;
        } else {
            cJSON_Delete(fr.json);
        }
        n++;
    }
    free(copy);
    return n;
}

/* receive() through the incremental decoder: each cut is one feed. */
static size_t
receive_stream(const char *stream, size_t len, const size_t *cuts, size_t ncuts, cJSON **out,
               size_t max_out, const char **err)
{
    struct codec_decoder d;
    codec_decoder_init(&d, BIG);
    size_t got = 0, fed = 0;
    *err = NULL;
    for (size_t c = 0; c <= ncuts && *err == NULL; c++) {
        size_t upto = c < ncuts ? cuts[c] : len;
        got += feed_chunk(&d, stream + fed, upto - fed, out, max_out, got, err);
        fed = upto;
    }
    CHECK(!codec_decoder_partial(&d) || *err != NULL, "a partial frame left over");
    codec_decoder_cleanup(&d);
    return got;
}

/*
 * A receiver that accumulates bytes and decodes as many frames as it can after each feed, like
 * conn.c did before it had the incremental decoder (and with use_decoder set, through it).
 * Returns the number of frames decoded; trees go to out[] (caller frees).
 */
static size_t
receive(const char *stream, size_t len, const size_t *cuts, size_t ncuts, cJSON **out,
        size_t max_out, const char **err)
{
    if (use_decoder) {
        return receive_stream(stream, len, cuts, ncuts, out, max_out, err);
    }
    struct sbuf buf = {0};
    size_t got = 0, fed = 0;
    *err = NULL;
    for (size_t c = 0; c <= ncuts && *err == NULL; c++) {
        size_t upto = c < ncuts ? cuts[c] : len;
        sbuf_append(&buf, stream + fed, upto - fed);
        fed = upto;
        for (;;) {
            struct codec_frame fr;
            const char *why = NULL;
            int st = decode_copy(buf.data ? buf.data : "", buf.len, BIG, &fr, &why, NULL);
            if (st == CODEC_NEED_MORE) {
                break;
            }
            if (st == CODEC_ERROR) {
                *err = why;
                break;
            }
            if (got < max_out) {
                out[got] = fr.json;
            } else {
                cJSON_Delete(fr.json);
            }
            got++;
            memmove(buf.data, buf.data + fr.consumed, buf.len - fr.consumed);
            buf.len -= fr.consumed;
        }
    }
    CHECK(buf.len == 0 || *err != NULL, "%zu bytes left over", buf.len);
    sbuf_cleanup(&buf);
    return got;
}

static cJSON *
decode_one(const struct frame *fr)
{
    struct codec_frame out;
    const char *why;
    if (decode_copy(fr->bytes, fr->len, BIG, &out, &why, NULL) != CODEC_COMPLETE) {
        return NULL;
    }
    return out.json;
}

static void
test_split_every_offset(void)
{
    load_frames();
    for (size_t i = 0; i < nframes; i++) {
        const struct frame *fr = &frames[i];
        cJSON *want = decode_one(fr);
        for (size_t k = 0; k <= fr->len; k++) {
            cJSON *got[2] = {NULL, NULL};
            const char *err;
            size_t n = receive(fr->bytes, fr->len, &k, 1, got, 2, &err);
            CHECK(err == NULL && n == 1, "%s: split at %zu: %zu frames, error %s", fr->label, k, n,
                  err ? err : "none");
            CHECK(n != 1 || cJSON_Compare(want, got[0], true), "%s: split at %zu: tree differs",
                  fr->label, k);
            cJSON_Delete(got[0]);
            cJSON_Delete(got[1]);
        }
        cJSON_Delete(want);
    }
}

/* All frames back to back: decoded in order whole, byte by byte, and split at every offset. */
static void
test_pipelined(void)
{
    load_frames();
    struct sbuf all = {0};
    cJSON *want[ARRAY_SIZE(frames)];
    for (size_t i = 0; i < nframes; i++) {
        sbuf_append(&all, frames[i].bytes, frames[i].len);
        want[i] = decode_one(&frames[i]);
    }
    cJSON *got[ARRAY_SIZE(frames)];
    const char *err;

    size_t n = receive(all.data, all.len, NULL, 0, got, nframes, &err);
    CHECK(n == nframes && err == NULL, "whole stream: %zu of %zu frames (%s)", n, nframes,
          err ? err : "");
    for (size_t i = 0; i < n && i < nframes; i++) {
        CHECK(cJSON_Compare(want[i], got[i], true), "whole stream: frame %zu differs", i);
        cJSON_Delete(got[i]);
    }

    size_t *every = xcalloc(all.len, sizeof(*every));
    for (size_t k = 0; k < all.len; k++) {
        every[k] = k;
    }
    n = receive(all.data, all.len, every, all.len, got, nframes, &err);
    CHECK(n == nframes && err == NULL, "byte by byte: %zu of %zu frames", n, nframes);
    for (size_t i = 0; i < n && i < nframes; i++) {
        CHECK(cJSON_Compare(want[i], got[i], true), "byte by byte: frame %zu differs", i);
        cJSON_Delete(got[i]);
    }
    free(every);

    for (size_t k = 0; k <= all.len; k++) {
        n = receive(all.data, all.len, &k, 1, got, nframes, &err);
        CHECK(n == nframes && err == NULL, "split at %zu: %zu of %zu frames", k, n, nframes);
        for (size_t i = 0; i < n && i < nframes; i++) {
            CHECK(cJSON_Compare(want[i], got[i], true), "split at %zu: frame %zu differs", k, i);
            cJSON_Delete(got[i]);
        }
    }
    for (size_t i = 0; i < nframes; i++) {
        cJSON_Delete(want[i]);
    }
    sbuf_cleanup(&all);
}

static void
test_utf16_units(void)
{
    static const struct {
        const char *s;
        long long units;
    } cases[] = {
        {"", 0},
        {"a", 1},
        {"\xc3\xa9", 1},         /* é */
        {"\xe2\x82\xac", 1},     /* € */
        {"\xf0\x9f\x98\x80", 2}, /* 😀 */
        {"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 5},
        {"\xef\xbf\xbf", 1},      /* U+FFFF */
        {"\xf4\x8f\xbf\xbf", 2},  /* U+10FFFF */
        {"\xc0\xaf", -1},         /* overlong '/' */
        {"\xe0\x80\xaf", -1},     /* overlong, 3 bytes */
        {"\xe0\x9f\xbf", -1},     /* overlong U+07FF, the largest one */
        {"\xf0\x8f\xbf\xbf", -1}, /* overlong U+FFFF */
        {"\xf0\x80\x80\xaf", -1}, /* overlong, 4 bytes */
        {"\xed\xa0\x80", -1},     /* high surrogate */
        {"\xed\xbf\xbf", -1},     /* low surrogate */
        {"\xf4\x90\x80\x80", -1}, /* above U+10FFFF */
        {"\x80", -1},             /* stray continuation */
        {"a\xe2\x82", -1},        /* truncated */
        {"\xe2\x28\xa1", -1},     /* bad continuation */
        {"\xff", -1},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        long long got = codec_utf16_units(cases[i].s, strlen(cases[i].s));
        CHECK(got == cases[i].units, "case %zu: %lld units, want %lld", i, got, cases[i].units);
    }
    /* Frames sized in UTF-16 units, not bytes or code points. */
    static const struct {
        const char *frame;
        size_t consumed;
    } fr[] = {
        {"3#\"\xc3\xa9\"x", 6},
        {"3#\"\xe2\x82\xac\"x", 7},
        {"4#\"\xf0\x9f\x98\x80\"x", 8},
    };
    for (size_t i = 0; i < ARRAY_SIZE(fr); i++) {
        struct codec_frame out;
        const char *why = NULL;
        int st = decode_copy(fr[i].frame, strlen(fr[i].frame), BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE && out.consumed == fr[i].consumed,
              "frame %zu: status %d consumed %zu (%s)", i, st, out.consumed, why ? why : "");
        if (st == CODEC_COMPLETE) {
            cJSON_Delete(out.json);
        }
    }
}

/* Test-side UTF-8 encoder for the randomised round trip. */
static size_t
put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL; /* fixed seed: reproducible */

static uint32_t
rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* A random scalar value of the given UTF-8 width, never a surrogate, '"', '\\' or control. */
static uint32_t
random_cp(int width)
{
    static const uint32_t lo[] = {0x20, 0x80, 0x800, 0x10000};
    static const uint32_t hi[] = {0x7f, 0x800, 0x10000, 0x110000};
    for (;;) {
        uint32_t cp = lo[width - 1] + rng_next() % (hi[width - 1] - lo[width - 1]);
        if (cp != '"' && cp != '\\' && !(cp >= 0xd800 && cp <= 0xdfff)) {
            return cp;
        }
    }
}

static void
test_random_strings_round_trip(void)
{
    for (int iter = 0; iter < 2000; iter++) {
        char text[512];
        size_t n = 0;
        long long units = 0;
        int count = (int)(rng_next() % 40);
        for (int c = 0; c < count; c++) {
            int width = 1 + (int)(rng_next() % 4);
            n += put_utf8(text + n, random_cp(width));
            units += width == 4 ? 2 : 1;
        }
        text[n] = '\0';
        CHECK(codec_utf16_units(text, n) == units, "iter %d: units %lld, want %lld", iter,
              codec_utf16_units(text, n), units);

        /* A raw-UTF-8 frame as Nest writes it decodes to the same string. */
        char frame[600];
        int flen = snprintf(frame, sizeof(frame), "%lld#\"%s\"", units + 2, text);
        struct codec_frame out;
        const char *why = NULL;
        int st = decode_copy(frame, (size_t)flen, BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE && out.consumed == (size_t)flen, "iter %d: status %d (%s)", iter,
              st, why ? why : "");
        if (st != CODEC_COMPLETE) {
            continue;
        }
        CHECK(cJSON_IsString(out.json) && strcmp(out.json->valuestring, text) == 0,
              "iter %d: decoded string differs", iter);

        /* Our encoding is ASCII with \u escapes and decodes back to the same tree. */
        size_t elen;
        char *enc = codec_encode(out.json, &elen);
        for (size_t b = 0; b < elen; b++) {
            CHECK((unsigned char)enc[b] < 0x80, "iter %d: byte %zu not ASCII", iter, b);
        }
        struct codec_frame back;
        st = decode_copy(enc, elen, BIG, &back, &why, NULL);
        CHECK(st == CODEC_COMPLETE && back.consumed == elen, "iter %d: re-decode %d", iter, st);
        if (st == CODEC_COMPLETE) {
            CHECK(cJSON_Compare(out.json, back.json, true), "iter %d: round trip differs", iter);
            cJSON_Delete(back.json);
        }
        free(enc);
        cJSON_Delete(out.json);
    }
}

static void
test_encode(void)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "t", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n\"");
    cJSON_AddStringToObject(msg, "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", "key"); /* "ключ" */
    cJSON_AddNumberToObject(msg, "n", 42);
    size_t len;
    char *enc = codec_encode(msg, &len);
    CHECK(len == strlen(enc), "len %zu, strlen %zu", len, strlen(enc));
    char *hash = strchr(enc, '#');
    CHECK(hash != NULL, "no '#' in %s", enc);
    if (hash) {
        size_t body = len - (size_t)(hash + 1 - enc);
        CHECK(strtoull(enc, NULL, 10) == body, "declared %llu, body %zu bytes: %s",
              strtoull(enc, NULL, 10), body, enc);
    }
    CHECK(strstr(enc, "\\u00e9\\u20ac\\ud83d\\ude00") != NULL, "escapes wrong: %s", enc);
    CHECK(strstr(enc, "\\u043a\\u043b\\u044e\\u0447") != NULL, "key not escaped: %s", enc);
    struct codec_frame out;
    const char *why = NULL;
    int st = decode_copy(enc, len, BIG, &out, &why, NULL);
    CHECK(st == CODEC_COMPLETE && out.consumed == len, "re-decode %d (%s)", st, why ? why : "");
    if (st == CODEC_COMPLETE) {
        CHECK(cJSON_Compare(msg, out.json, true), "round trip differs");
        cJSON_Delete(out.json);
    }
    free(enc);
    cJSON_Delete(msg);

    /* Invalid UTF-8 smuggled into a tree becomes U+FFFD, and the frame stays valid. */
    cJSON *bad = cJSON_CreateString("a\xff"
                                    "b\xed\xa0\x80"
                                    "c");
    enc = codec_encode(bad, &len);
    CHECK(strstr(enc, "\\ufffd") != NULL, "no replacement character: %s", enc);
    st = decode_copy(enc, len, BIG, &out, &why, NULL);
    CHECK(st == CODEC_COMPLETE, "encoded invalid UTF-8 does not decode: %s", enc);
    if (st == CODEC_COMPLETE) {
        CHECK(out.json->valuestring[0] == 'a' && strchr(out.json->valuestring, 'c') != NULL,
              "replacement lost neighbours: %s", out.json->valuestring);
        cJSON_Delete(out.json);
    }
    free(enc);
    cJSON_Delete(bad);

    /* Every Nest frame re-encodes to an equal tree with length == bytes. */
    load_frames();
    for (size_t i = 0; i < nframes; i++) {
        cJSON *t = decode_one(&frames[i]);
        if (t == NULL) {
            continue;
        }
        enc = codec_encode(t, &len);
        st = decode_copy(enc, len, BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE && out.consumed == len, "%s: re-encoded frame: %d",
              frames[i].label, st);
        if (st == CODEC_COMPLETE) {
            CHECK(cJSON_Compare(t, out.json, true), "%s: round trip differs", frames[i].label);
            cJSON_Delete(out.json);
        }
        free(enc);
        cJSON_Delete(t);
    }
}

/* One number through encode and decode; true if it comes back bit for bit (0 and -0 aside). */
static bool
number_survives(double v, char *shown, size_t size)
{
    cJSON *n = cJSON_CreateNumber(v);
    size_t len;
    char *enc = codec_encode(n, &len);
    struct codec_frame out;
    const char *why;
    bool same = decode_copy(enc, len, BIG, &out, &why, NULL) == CODEC_COMPLETE &&
                cJSON_IsNumber(out.json) && out.json->valuedouble == v;
    snprintf(shown, size, "%s", enc);
    cJSON_Delete(out.json);
    free(enc);
    cJSON_Delete(n);
    return same;
}

/*
 * Numbers keep their exact value, as JSON.stringify and JSON.parse keep it: a 16- or 17-digit
 * value must not be rounded to 15 significant digits on the way out.
 */
static void
test_number_round_trip(void)
{
    static const double values[] = {
        0,
        1,
        -1,
        0.5,
        0.1,
        4.35,
        1e21,
        1e-7,
        1767323045123.0,
        1234567890123456.0,
        9007199254740991.0, /* JSON_MAX_SAFE_INT */
        -9007199254740991.0,
        9007199254740992.0,
        0.30000000000000004,
        123456789.12345678,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
    };
    char shown[64];
    for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
        CHECK(number_survives(values[i], shown, sizeof(shown)), "%.17g encoded as %s", values[i],
              shown);
    }
    int changed = 0;
    double first = 0;
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = ((uint64_t)rng_next() << 32) ^ rng_next() ^ ((uint64_t)rng_next() << 16);
        double v;
        memcpy(&v, &bits, sizeof(v));
        if (!isfinite(v)) {
            continue;
        }
        if (!number_survives(v, shown, sizeof(shown)) && changed++ == 0) {
            first = v;
        }
    }
    CHECK(changed == 0, "%d of 20000 random doubles changed, e.g. %.17g", changed, first);
}

struct bad_case {
    const char *input; /* NUL-terminated unless len is set */
    size_t len;        /* 0: strlen(input) */
    size_t max;        /* frame limit; 0: BIG */
    const char *what;  /* for messages */
};

static void
expect_error(const struct bad_case *c)
{
    size_t len = c->len ? c->len : strlen(c->input);
    struct codec_frame out;
    const char *why = NULL;
    int st = decode_copy(c->input, len, c->max ? c->max : BIG, &out, &why, NULL);
    CHECK(st == CODEC_ERROR, "%s: status %d, want CODEC_ERROR", c->what, st);
    CHECK(st != CODEC_ERROR || (why != NULL && *why != '\0'), "%s: no reason", c->what);
    CHECK(st != CODEC_ERROR || out.json == NULL, "%s: tree left in out", c->what);
    if (st == CODEC_COMPLETE) {
        cJSON_Delete(out.json);
    }
    /* The incremental decoder refuses it for the same reason, whole or byte by byte. */
    for (size_t step = len; step >= 1; step = step == 1 ? 0 : 1) {
        struct codec_decoder d;
        codec_decoder_init(&d, c->max ? c->max : BIG);
        cJSON *got[2] = {NULL, NULL};
        const char *derr = NULL;
        size_t n = 0;
        for (size_t off = 0; off < len && derr == NULL; off += step) {
            n += feed_chunk(&d, c->input + off, off + step <= len ? step : len - off, got, 2, n,
                            &derr);
        }
        CHECK(derr != NULL && n == 0, "%s: decoder (step %zu): %zu frames, error %s", c->what, step,
              n, derr ? derr : "none");
        CHECK(derr == NULL || why == NULL || strcmp(derr, why) == 0,
              "%s: decoder (step %zu) says '%s', codec_decode '%s'", c->what, step, derr, why);
        cJSON_Delete(got[0]);
        cJSON_Delete(got[1]);
        codec_decoder_cleanup(&d);
    }
}

static void
test_malformed(void)
{
    static const struct bad_case cases[] = {
        {"1a#{}", 0, 0, "non-digit in length"},
        {"a", 0, 0, "letter first"},
        {"-1#{}", 0, 0, "negative length"},
        {"+2#{}", 0, 0, "plus sign"},
        {" 2#{}", 0, 0, "leading space"},
        {"2 #{}", 0, 0, "space before #"},
        {"\xd9\xa3#{}", 0, 0, "Arabic-Indic digit"},
        {"#{}", 0, 0, "empty length"},
        {"#", 0, 0, "lone #"},
        {"12345678901", 0, 0, "11 digits, no #"},
        {"00000000000#", 0, 0, "11 zero digits"},
        {"0#", 0, 0, "zero length"},
        {"0#{}", 0, 0, "zero length before a body"},
        {"000#", 0, 0, "zero length, several digits"},
        {"3#{a}", 0, 0, "bad JSON"},
        {"2#{]", 0, 0, "mismatched bracket"},
        {"1#{", 0, 0, "unterminated object"},
        {"4#[1,2", 0, 0, "unterminated array"},
        {"4#tru1", 0, 0, "bad literal"},
        {"3#{}x", 0, 0, "trailing byte inside the length"},
        {"4#{}{}", 0, 0, "two values inside one length"},
        {"3#1 2", 0, 0, "two numbers inside one length"},
        {"3#\"\xf0\x9f\x98\x80\"", 0, 0, "length ends inside a surrogate pair"},
        {"2#\"\xf0\x9f\x98\x80\"", 0, 0, "length ends before a 4-byte character"},
        {"4#\"\xc0\xaf\"", 0, 0, "overlong 2-byte"},
        {"5#\"\xe0\x80\xaf\"", 0, 0, "overlong 3-byte"},
        {"5#\"\xe0\x9f\xbf\"", 0, 0, "overlong U+07FF"},
        {"6#\"\xf0\x80\x80\xaf\"", 0, 0, "overlong 4-byte"},
        {"3#\"\xed\xa0\x80\"", 0, 0, "UTF-8 encoded surrogate"},
        {"4#\"\xf4\x90\x80\x80\"", 0, 0, "above U+10FFFF"},
        {"3#\"\x80\"", 0, 0, "stray continuation byte"},
        {"3#\"\xff\"", 0, 0, "0xff byte"},
        {"5#\"\xe2\x28\xa1\"", 0, 0, "bad continuation"},
        {"8#\"\\ud800\"", 0, 0, "escaped lone high surrogate"},
        {"8#\"\\udc00\"", 0, 0, "escaped lone low surrogate"},
        {"4#\"\\x\"", 0, 0, "bad escape"},
        {"101", 0, 100, "prefix over the limit, no body yet"},
        {"1000", 0, 999, "fourth digit over the limit"},
        {"9999999999", 0, 1048576, "ten digits over the default limit"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        expect_error(&cases[i]);
    }
    /* A NUL byte inside the body is not JSON whitespace. */
    static const struct bad_case nul = {"3#{}\0", 5, 0, "NUL after the value"};
    expect_error(&nul);

    /* The size limit is enforced on the prefix alone, before '#' or any body arrives. */
    struct codec_frame out;
    const char *why = NULL;
    CHECK(decode_copy("10", 2, 100, &out, &why, NULL) == CODEC_NEED_MORE, "10 <= 100 refused");
    CHECK(decode_copy("100", 3, 100, &out, &why, NULL) == CODEC_NEED_MORE, "100 <= 100 refused");
    CHECK(decode_copy("100#", 4, 100, &out, &why, NULL) == CODEC_NEED_MORE, "body awaited");
}

static void
test_need_more(void)
{
    static const char *prefixes[] = {"",   "1",        "12",           "1234567890",
                                     "5#", "5#{\"a\"", "3#\"\xe2\x82", "4#\"\xf0\x9f\x98"};
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
        struct codec_frame out;
        const char *why = NULL;
        size_t need = 0;
        size_t len = strlen(prefixes[i]);
        int st = decode_copy(prefixes[i], len, BIG, &out, &why, &need);
        CHECK(st == CODEC_NEED_MORE, "'%s': status %d (%s)", prefixes[i], st, why ? why : "");
        CHECK(need > len, "'%s': need %zu <= have %zu", prefixes[i], need, len);
        CHECK(out.json == NULL && out.consumed == 0, "'%s': out not cleared", prefixes[i]);
    }
    /* need may be NULL. */
    struct codec_frame out;
    const char *why = NULL;
    CHECK(codec_decode("5#{", 3, BIG, &out, &why, NULL) == CODEC_NEED_MORE, "NULL need");
}

/* Whitespace JSON.parse accepts around the value is fine inside the declared length. */
static void
test_whitespace(void)
{
    static const char *ok[] = {"4# {} ", "4#{}\r\n", "3#\t{}", "5#[ 1 ]"};
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct codec_frame out;
        const char *why = NULL;
        int st = decode_copy(ok[i], strlen(ok[i]), BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE && out.consumed == strlen(ok[i]), "'%s': status %d (%s)", ok[i],
              st, why ? why : "");
        if (st == CODEC_COMPLETE) {
            cJSON_Delete(out.json);
        }
    }
}

/*
 * Input JSON.parse rejects must not pass either: Nest peers would never send it, and accepting
 * it means the daemon reads a different message than a Nest service would.
 */
static void
test_strict_json(void)
{
    static const struct bad_case cases[] = {
        {"3#\"\x01\"", 0, 0, "raw control character in a string"},
        {"5#\"a\tb\"", 0, 0, "raw TAB in a string"},
        {"3#\x01{}", 0, 0, "control byte before the value"},
        {"3#{\x01}", 0, 0, "control byte inside an object"},
        {"2#01", 0, 0, "leading zero"},
        {"2#1.", 0, 0, "fraction without digits"},
        {"3#-01", 0, 0, "negative leading zero"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        expect_error(&cases[i]);
    }
}

static void
test_has_nul(void)
{
    static const struct {
        const char *body;
        bool nul;
    } cases[] = {
        {"{\"a\":\"x\\u0000y\"}", true},
        {"{\"a\\u0000\":1}", true},
        {"[\"\\u0000\"]", true},
        {"{\"a\":\"x\\\\u0000y\"}", false}, /* an escaped backslash, then text */
        {"{\"a\":\"\\\\\\u0000\"}", true},  /* escaped backslash, then a real NUL escape */
        {"{\"a\":\"\\u00001\"}", true},
        {"{\"a\":\"\\u0001\"}", false},
        {"{\"a\":\"u0000\"}", false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char frame[128];
        int n = snprintf(frame, sizeof(frame), "%zu#%s", strlen(cases[i].body), cases[i].body);
        struct codec_frame out;
        const char *why = NULL;
        int st = decode_copy(frame, (size_t)n, BIG, &out, &why, NULL);
        CHECK(st == CODEC_COMPLETE, "%s: status %d (%s)", cases[i].body, st, why ? why : "");
        if (st == CODEC_COMPLETE) {
            CHECK(out.has_nul == cases[i].nul, "%s: has_nul %d", cases[i].body, out.has_nul);
            cJSON_Delete(out.json);
        }
    }
}

static void
free_frames(void)
{
    for (size_t i = 0; i < nframes; i++) {
        free(frames[i].bytes);
    }
    nframes = 0;
}

static void
test_split_every_offset_stream(void)
{
    use_decoder = true;
    test_split_every_offset();
    use_decoder = false;
}

static void
test_pipelined_stream(void)
{
    use_decoder = true;
    test_pipelined();
    use_decoder = false;
}

/*
 * A frame of about `size` bytes: a request whose data.s is a string of 1-, 2-, 3- and 4-byte
 * characters (an 11-byte pattern, so slices of most sizes cut characters at every phase). Returns
 * the frame (caller frees) and the string in *text (caller frees).
 */
static char *
big_frame(size_t size, size_t *len, char **text)
{
    static const char pattern[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                                  "b";
    struct sbuf s = {0};
    while (s.len + sizeof(pattern) < size) {
        sbuf_append(&s, pattern, sizeof(pattern) - 1);
    }
    *text = xstrdup(s.data);
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(cJSON_AddObjectToObject(msg, "pattern"), "cmd",
                          cJSON_CreateString("chance.claim"));
    cJSON_AddStringToObject(cJSON_AddObjectToObject(msg, "data"), "s", s.data);
    cJSON_AddStringToObject(msg, "id", "big-1");
    char *raw = cJSON_PrintUnformatted(msg); /* raw UTF-8, the way Nest writes it */
    long long units = codec_utf16_units(raw, strlen(raw));
    char *frame = xasprintf("%lld#%s", units, raw);
    *len = strlen(frame);
    free(raw);
    cJSON_Delete(msg);
    sbuf_cleanup(&s);
    return frame;
}

/* Feeds frame in slices of `slice` bytes (every slice an exact-size heap copy); checks the one
 * decoded frame and returns the bytes the decoder examined. */
static uint64_t
trickle(const char *frame, size_t len, size_t slice, const char *text)
{
    struct codec_decoder d;
    codec_decoder_init(&d, 64 << 20);
    cJSON *got[2] = {NULL, NULL};
    const char *err = NULL;
    size_t n = 0;
    for (size_t off = 0; off < len && err == NULL; off += slice) {
        n += feed_chunk(&d, frame + off, off + slice <= len ? slice : len - off, got, 2, n, &err);
    }
    CHECK(err == NULL && n == 1, "slices of %zu: %zu frames, error %s", slice, n,
          err ? err : "none");
    const char *s =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(got[0], "data"), "s"));
    CHECK(s != NULL && strcmp(s, text) == 0, "slices of %zu: data.s differs", slice);
    CHECK(!codec_decoder_partial(&d), "slices of %zu: partial frame left", slice);
    uint64_t examined = d.examined;
    cJSON_Delete(got[0]);
    cJSON_Delete(got[1]);
    codec_decoder_cleanup(&d);
    return examined;
}

/*
 * Linear in the frame size however the bytes arrive: a 3 MB frame trickled in 400-byte slices
 * (what a slow or hostile peer sends) costs the decoder a small constant number of looks per
 * byte: one scan, one copy into the frame buffer, the JSON checks and parse. Re-running
 * codec_decode on the growing buffer after each slice, as conn.c once did, looks at about
 * len^2 / 800 bytes: 11 billion here.
 */
static void
test_linear_trickle(void)
{
    size_t len;
    char *text;
    char *frame = big_frame(3 << 20, &len, &text);
    CHECK(len >= (3u << 20) - 64, "frame of %zu bytes", len);
    uint64_t whole = trickle(frame, len, len, text);
    CHECK(whole <= 4 * (uint64_t)len, "whole: examined %llu for %zu bytes",
          (unsigned long long)whole, len);
    static const size_t slices[] = {400, 4096, 1 << 16, 999983};
    for (size_t i = 0; i < ARRAY_SIZE(slices); i++) {
        uint64_t examined = trickle(frame, len, slices[i], text);
        CHECK(examined <= 5 * (uint64_t)len, "slices of %zu: examined %llu for %zu bytes (%.1f x)",
              slices[i], (unsigned long long)examined, len, (double)examined / (double)len);
    }
    free(frame);
    free(text);

    /* The extreme: one byte per feed. */
    frame = big_frame(100000, &len, &text);
    uint64_t examined = trickle(frame, len, 1, text);
    CHECK(examined <= 5 * (uint64_t)len, "byte by byte: examined %llu for %zu bytes",
          (unsigned long long)examined, len);
    free(frame);
    free(text);

    /* Several frames in one feed, the last one cut: each is taken in turn, the cut one kept. */
    struct codec_decoder d;
    codec_decoder_init(&d, BIG);
    const char *three = "2#{}5#[1,2]3#\"a";
    cJSON *got[4] = {NULL, NULL, NULL, NULL};
    const char *err = NULL;
    size_t n = feed_chunk(&d, three, strlen(three), got, 4, 0, &err);
    CHECK(n == 2 && err == NULL && codec_decoder_partial(&d), "pipelined: %zu frames", n);
    n += feed_chunk(&d, "\"", 1, got, 4, n, &err);
    CHECK(n == 3 && cJSON_IsString(got[2]) && strcmp(got[2]->valuestring, "a") == 0,
          "the cut frame completed: %zu frames", n);
    for (size_t i = 0; i < ARRAY_SIZE(got); i++) {
        cJSON_Delete(got[i]);
    }
    codec_decoder_cleanup(&d);
}

static const struct test_case cases[] = {
    {"nest_frames_whole", test_nest_frames_whole},
    {"byte_by_byte", test_byte_by_byte},
    {"split_every_offset", test_split_every_offset},
    {"pipelined", test_pipelined},
    {"split_every_offset_stream", test_split_every_offset_stream},
    {"pipelined_stream", test_pipelined_stream},
    {"linear_trickle", test_linear_trickle},
    {"utf16_units", test_utf16_units},
    {"random_strings_round_trip", test_random_strings_round_trip},
    {"encode", test_encode},
    {"number_round_trip", test_number_round_trip},
    {"malformed", test_malformed},
    {"need_more", test_need_more},
    {"whitespace", test_whitespace},
    {"strict_json", test_strict_json},
    {"has_nul", test_has_nul},
};

HARNESS_MAIN("codec", cases)
