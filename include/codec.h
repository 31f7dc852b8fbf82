/*
 * NestJS TCP transport framing as pure functions: "<length>#<JSON>" where length counts UTF-16
 * code units of the JSON text (JavaScript's string.length). No sockets here.
 */
#ifndef CHANCED_CODEC_H
#define CHANCED_CODEC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

enum codec_status {
    CODEC_COMPLETE,  /* one frame decoded; see struct codec_frame */
    CODEC_NEED_MORE, /* the buffer holds a prefix of a valid frame */
    CODEC_ERROR,     /* malformed: close the connection */
};

struct codec_frame {
    cJSON *json;     /* the decoded message; the caller owns it (cJSON_Delete) */
    size_t consumed; /* bytes of input used by the frame */
    bool has_nul;    /* a string held \u0000, which cJSON silently truncates at */
};

/* Longest accepted length prefix, in digits. 10 digits cover any sane limit. */
#define CODEC_MAX_DIGITS 10

/*
 * Decodes the first frame in buf[0..len). max_units bounds the declared length (checked before
 * the body is awaited, so a peer cannot make us buffer more). On CODEC_ERROR *why is a static
 * phrase. On CODEC_NEED_MORE, *need (if not NULL) is a lower bound of the total bytes required.
 */
int codec_decode(const char *buf, size_t len, size_t max_units, struct codec_frame *out,
                 const char **why, size_t *need);

/*
 * Encodes msg as one frame, escaping every non-ASCII character as \uXXXX so that the length in
 * UTF-16 units equals the byte count. Returns a new NUL-terminated buffer (free with free()) and
 * its length in *len.
 */
char *codec_encode(const cJSON *msg, size_t *len);

/* Counts the UTF-16 code units of a UTF-8 string; -1 if it is not valid UTF-8. */
long long codec_utf16_units(const char *s, size_t len);

#endif
