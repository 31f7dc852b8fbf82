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

int
codec_decode(const char *buf, size_t len, size_t max_units, struct codec_frame *out,
             const char **why, size_t *need)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t i = 0;
    unsigned long long declared = 0;

    out->json = NULL;
    out->consumed = 0;
    out->has_nul = false;
    for (; i < len && p[i] != '#'; i++) {
        if (p[i] < '0' || p[i] > '9' || i >= CODEC_MAX_DIGITS) {
            *why = p[i] < '0' || p[i] > '9' ? "malformed length prefix" : "length prefix too long";
            return CODEC_ERROR;
        }
        declared = declared * 10 + (p[i] - '0');
        if (declared > max_units) {
            *why = "frame exceeds the size limit";
            return CODEC_ERROR;
        }
    }
    if (i == len) {
        if (need) {
            *need = len + 1;
        }
        return CODEC_NEED_MORE;
    }
    if (i == 0) {
        *why = "empty length prefix";
        return CODEC_ERROR;
    }
    if (declared == 0) {
        *why = "empty frame";
        return CODEC_ERROR;
    }

    /* Walk the body counting UTF-16 units until the declared count is reached. */
    size_t body = i + 1, j = body;
    unsigned long long units = 0;
    while (units < declared) {
        if (j >= len) {
            if (need) {
                *need = j + (size_t)(declared - units);
            }
            return CODEC_NEED_MORE;
        }
        size_t n = utf8_seq_len(p[j]);
        if (n == 0) {
            *why = "invalid UTF-8";
            return CODEC_ERROR;
        }
        if (j + n > len) {
            if (need) {
                *need = j + n;
            }
            return CODEC_NEED_MORE;
        }
        if (utf8_decode(p + j, n) < 0) {
            *why = "invalid UTF-8";
            return CODEC_ERROR;
        }
        units += n == 4 ? 2 : 1;
        j += n;
    }
    if (units != declared) {
        *why = "length splits a character";
        return CODEC_ERROR;
    }

    if (!json_text_strict(buf + body, j - body)) {
        *why = "invalid JSON";
        return CODEC_ERROR;
    }
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithLengthOpts(buf + body, j - body, &end, 0);
    if (json == NULL) {
        *why = "invalid JSON";
        return CODEC_ERROR;
    }
    while (end < buf + j && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) {
        end++;
    }
    if (end != buf + j) {
        cJSON_Delete(json);
        *why = "trailing bytes after JSON";
        return CODEC_ERROR;
    }
    out->json = json;
    out->consumed = j;
    out->has_nul = has_nul_escape(buf + body, j - body);
    return CODEC_COMPLETE;
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
