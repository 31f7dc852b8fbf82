/* NestJS TCP framing: decode with UTF-16 length accounting, encode with ASCII-only JSON. */
#include "codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the UTF-8 sequence starting with byte c, or 0 if c cannot start one. */
static size_t
utf8_seq_len(unsigned char c)
{
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        return 2;
    }
    if ((c & 0xf0) == 0xe0) {
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        return 4;
    }
    return 0;
}

/* Decodes one sequence of n bytes (already length-checked); returns the code point or -1. */
static long
utf8_decode(const unsigned char *p, size_t n)
{
    long cp = n == 1 ? p[0] : n == 2 ? (p[0] & 0x1f) : n == 3 ? (p[0] & 0x0f) : (p[0] & 0x07);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1;
    }
    return cp;
}

long long
codec_utf16_units(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    long long units = 0;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len(p[i]);
        if (n == 0 || i + n > len || utf8_decode(p + i, n) < 0) {
            return -1;
        }
        units += n == 4 ? 2 : 1;
        i += n;
    }
    return units;
}

/* True if the JSON text holds a \u0000 escape (not an escaped backslash followed by u0000). */
static bool
has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '\\') {
            continue;
        }
        if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0) {
            return true;
        }
        i++; /* skip the escaped character, so "\\\\u0000" is not taken for one */
    }
    return false;
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t
skip_digits(const char *s, size_t j, size_t len)
{
    while (j < len && is_digit(s[j])) {
        j++;
    }
    return j;
}

/*
 * Rejects what JSON.parse rejects but cJSON accepts: raw control characters inside strings,
 * bytes other than space, tab, CR and LF between tokens, and numbers with leading zeros or a
 * bare decimal point ("01", "1.").
 */
static bool
json_text_strict(const char *s, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_string) {
            if (c < 0x20) {
                return false;
            }
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c < 0x20 && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            return false;
        } else if ((c >= '0' && c <= '9') || c == '-') {
            size_t j = i + (c == '-');
            if (j >= len || !is_digit(s[j])) {
                return false;
            }
            if (s[j] == '0') {
                if (++j < len && is_digit(s[j])) {
                    return false; /* leading zero */
                }
            }
            j = skip_digits(s, j, len);
            if (j < len && s[j] == '.') {
                if (++j >= len || !is_digit(s[j])) {
                    return false; /* "1." */
                }
                j = skip_digits(s, j, len);
            }
            if (j < len && (s[j] == 'e' || s[j] == 'E')) {
                j += (j + 1 < len && (s[j + 1] == '+' || s[j + 1] == '-')) ? 2 : 1;
                if (j >= len || !is_digit(s[j])) {
                    return false;
                }
                j = skip_digits(s, j, len);
            }
            i = j - 1;
        }
    }
    return true;
}

/*
 * Scans p[*pos..len) as the continuation of the frame d is decoding: the length prefix, the '#'
 * (then *body_at is where the body starts in p), and the body, counting its UTF-16 units, until
 * the declared count is reached. Every byte is looked at once. Returns CODEC_COMPLETE with *pos
 * just past the body, CODEC_NEED_MORE with *pos == len, or CODEC_ERROR.
 */
static int
scan(struct codec_decoder *d, const unsigned char *p, size_t len, size_t *pos, size_t *body_at,
     const char **why)
{
    size_t i = *pos;
    if (!d->in_body) {
        for (; i < len && p[i] != '#'; i++) {
            if (p[i] < '0' || p[i] > '9' || d->digits >= CODEC_MAX_DIGITS) {
                *why =
                    p[i] < '0' || p[i] > '9' ? "malformed length prefix" : "length prefix too long";
                return CODEC_ERROR;
            }
            d->declared = d->declared * 10 + (p[i] - '0');
            d->digits++;
            if (d->declared > d->max_units) {
                *why = "frame exceeds the size limit";
                return CODEC_ERROR;
            }
        }
        d->examined += i - *pos;
        if (i == len) {
            *pos = i;
            return CODEC_NEED_MORE;
        }
        if (d->digits == 0) {
            *why = "empty length prefix";
            return CODEC_ERROR;
        }
        if (d->declared == 0) {
            *why = "empty frame";
            return CODEC_ERROR;
        }
        d->in_body = true;
        d->examined++;
        *body_at = ++i;
    }

    size_t from = i;
    int st = CODEC_NEED_MORE;
    if (d->seq_len > 0) { /* finish the character the previous feed cut */
        while (d->seq_have < d->seq_len && i < len) {
            d->seq[d->seq_have++] = p[i++];
        }
        if (d->seq_have < d->seq_len) {
            goto out;
        }
        if (utf8_decode(d->seq, d->seq_len) < 0) {
            *why = "invalid UTF-8";
            return CODEC_ERROR;
        }
        d->units += d->seq_len == 4 ? 2 : 1;
        d->seq_len = d->seq_have = 0;
    }
    while (d->units < d->declared) {
        if (i >= len) {
            goto out;
        }
        if (p[i] < 0x80) { /* ASCII: one byte, one unit */
            size_t run = len - i;
            if (run > d->declared - d->units) {
                run = (size_t)(d->declared - d->units);
            }
            size_t k = 0;
            while (k < run && p[i + k] < 0x80) {
                k++;
            }
            i += k;
            d->units += k;
            continue;
        }
        size_t n = utf8_seq_len(p[i]);
        if (n == 0) {
            *why = "invalid UTF-8";
            return CODEC_ERROR;
        }
        if (i + n > len) { /* cut by the end of the input: keep its first bytes */
            d->seq_len = n;
            d->seq_have = len - i;
            memcpy(d->seq, p + i, d->seq_have);
            i = len;
            goto out;
        }
        if (utf8_decode(p + i, n) < 0) {
            *why = "invalid UTF-8";
            return CODEC_ERROR;
        }
        d->units += n == 4 ? 2 : 1;
        i += n;
    }
    if (d->units != d->declared) {
        *why = "length splits a character";
        return CODEC_ERROR;
    }
    st = CODEC_COMPLETE;
out:
    d->examined += i - from;
    *pos = i;
    return st;
}

/* Parses the complete body text of a frame into out (the JSON checks of codec_decode). */
static int
finish(struct codec_decoder *d, const char *body, size_t len, struct codec_frame *out,
       const char **why)
{
    d->examined += 2 * len; /* the strictness pass and cJSON's parse */
    if (!json_text_strict(body, len)) {
        *why = "invalid JSON";
        return CODEC_ERROR;
    }
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (json == NULL) {
        *why = "invalid JSON";
        return CODEC_ERROR;
    }
    while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) {
        end++;
    }
    if (end != body + len) {
        cJSON_Delete(json);
        *why = "trailing bytes after JSON";
        return CODEC_ERROR;
    }
    d->examined += len; /* the NUL-escape pass */
    out->json = json;
    out->has_nul = has_nul_escape(body, len);
    return CODEC_COMPLETE;
}

/* Forgets the frame in progress, keeping the counter and (if small) the held buffer. */
static void
frame_reset(struct codec_decoder *d)
{
    d->digits = 0;
    d->in_body = false;
    d->declared = d->units = 0;
    d->seq_have = d->seq_len = 0;
    d->frame_bytes = 0;
    if (d->held.cap > 65536) {
        sbuf_cleanup(&d->held);
    }
    d->held.len = 0;
}

void
codec_decoder_init(struct codec_decoder *d, size_t max_units)
{
    memset(d, 0, sizeof(*d));
    d->max_units = max_units;
}

void
codec_decoder_cleanup(struct codec_decoder *d)
{
    sbuf_cleanup(&d->held);
    frame_reset(d);
}

bool
codec_decoder_partial(const struct codec_decoder *d)
{
    return d->frame_bytes > 0;
}

int
codec_decoder_feed(struct codec_decoder *d, const char *buf, size_t len, struct codec_frame *out,
                   const char **why, size_t *used)
{
    bool body_before = d->in_body; /* the body began in an earlier feed */
    size_t pos = 0, body_at = 0;

    out->json = NULL;
    out->consumed = 0;
    out->has_nul = false;
    int st = scan(d, (const unsigned char *)buf, len, &pos, &body_at, why);
    d->frame_bytes += pos;
    *used = pos;
    if (st == CODEC_ERROR) {
        frame_reset(d);
        return CODEC_ERROR;
    }
    size_t from = body_before ? 0 : body_at; /* this feed's body bytes: buf[from..pos) */
    if (st == CODEC_NEED_MORE) {
        if (d->in_body && pos > from) {
            sbuf_append(&d->held, buf + from, pos - from);
            d->examined += pos - from;
        }
        return CODEC_NEED_MORE;
    }
    size_t total = d->frame_bytes;
    if (d->held.len > 0) {
        sbuf_append(&d->held, buf + from, pos - from);
        d->examined += pos - from;
        st = finish(d, d->held.data, d->held.len, out, why);
    } else {
        st = finish(d, buf + from, pos - from, out, why); /* all in this feed: no copy */
    }
    frame_reset(d);
    if (st == CODEC_COMPLETE) {
        out->consumed = total;
    }
    return st;
}

int
codec_decode(const char *buf, size_t len, size_t max_units, struct codec_frame *out,
             const char **why, size_t *need)
{
    struct codec_decoder d;
    size_t pos = 0, body_at = 0;

    codec_decoder_init(&d, max_units);
    out->json = NULL;
    out->consumed = 0;
    out->has_nul = false;
    int st = scan(&d, (const unsigned char *)buf, len, &pos, &body_at, why);
    if (st == CODEC_NEED_MORE && need) {
        if (!d.in_body) {
            *need = len + 1;
        } else if (d.seq_len > 0) {
            *need = len + (d.seq_len - d.seq_have);
        } else {
            *need = len + (size_t)(d.declared - d.units);
        }
    }
    if (st == CODEC_COMPLETE) {
        st = finish(&d, buf + body_at, pos - body_at, out, why);
        if (st == CODEC_COMPLETE) {
            out->consumed = pos;
        }
    }
    return st;
}

/* True if cJSON prints this number exactly: an integer of at most 15 digits. */
static bool
number_prints_exactly(double d)
{
    return isfinite(d) && floor(d) == d && fabs(d) < 1e15;
}

static bool
tree_numbers_exact(const cJSON *node)
{
    for (; node; node = node->next) {
        if (cJSON_IsNumber(node) && !number_prints_exactly(node->valuedouble)) {
            return false;
        }
        if (node->child && !tree_numbers_exact(node->child)) {
            return false;
        }
    }
    return true;
}

/*
 * cJSON prints other numbers with 15 significant digits whenever a loose comparison says that
 * is close enough, which changes them (2^53 - 1, 0.30000000000000004). Replace each such number
 * by raw text of the shortest form that reads back to the very same double.
 */
static void
exact_numbers(cJSON *node)
{
    for (; node; node = node->next) {
        if (node->child) {
            exact_numbers(node->child);
        }
        if (!cJSON_IsNumber(node) || number_prints_exactly(node->valuedouble)) {
            continue;
        }
        char text[40] = "null"; /* JSON has no infinities; JavaScript prints null too */
        double d = node->valuedouble;
        if (isfinite(d)) {
            for (int digits = 15; digits <= 17; digits++) {
                snprintf(text, sizeof(text), "%.*g", digits, d);
                if (strtod(text, NULL) == d) {
                    break;
                }
            }
        }
        node->type = cJSON_Raw;
        node->valuestring = xstrdup(text);
    }
}

char *
codec_encode(const cJSON *msg, size_t *len)
{
    char *raw;
    if (tree_numbers_exact(msg)) {
        raw = cJSON_PrintUnformatted(msg);
    } else {
        cJSON *copy = cJSON_Duplicate(msg, 1);
        exact_numbers(copy);
        raw = cJSON_PrintUnformatted(copy);
        cJSON_Delete(copy);
    }
    if (raw == NULL) {
        abort(); /* cJSON fails only on allocation */
    }
    struct sbuf body = {0};
    const unsigned char *p = (const unsigned char *)raw;
    size_t i = 0, rawlen = strlen(raw);
    while (i < rawlen) {
        size_t n = utf8_seq_len(p[i]);
        if (n == 1) {
            size_t run = i;
            while (run < rawlen && p[run] < 0x80) {
                run++;
            }
            sbuf_append(&body, raw + i, run - i);
            i = run;
            continue;
        }
        long cp = (n == 0 || i + n > rawlen) ? -1 : utf8_decode(p + i, n);
        if (cp < 0) {
            /* cJSON passes string bytes through; replace invalid ones with U+FFFD. */
            sbuf_appends(&body, "\\ufffd");
            i++;
            continue;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            sbuf_appendf(&body, "\\u%04lx\\u%04lx", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        } else {
            sbuf_appendf(&body, "\\u%04lx", cp);
        }
        i += n;
    }
    free(raw);
    struct sbuf frame = {0};
    sbuf_appendf(&frame, "%zu#", body.len);
    sbuf_append(&frame, body.data ? body.data : "", body.len);
    sbuf_cleanup(&body);
    *len = frame.len;
    return sbuf_steal(&frame);
}
