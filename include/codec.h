/*
 * NestJS TCP transport framing as pure functions: "<length>#<JSON>" where length counts UTF-16
 * code units of the JSON text (JavaScript's string.length). No sockets here.
 */
#ifndef CHANCED_CODEC_H
#define CHANCED_CODEC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * An incremental decoder for a byte stream cut anywhere (what a connection receives). It
 * remembers how far it has scanned and what the frame still needs, so each byte is looked at a
 * bounded number of times however the bytes arrive: decoding is linear in the frame size (the
 * one-shot codec_decode, re-run on a growing buffer, rescans it on every read).
 *
 * Bytes of an unfinished frame are copied into the decoder (at most the frame's size); a frame
 * that arrives within one feed is parsed in place, without a copy.
 */
struct codec_decoder {
    size_t max_units;            /* frame limit in UTF-16 units */
    size_t digits;               /* digits of the length prefix seen so far */
    bool in_body;                /* the '#' has been seen */
    unsigned long long declared; /* the length prefix's value so far */
    unsigned long long units;    /* UTF-16 units of the body scanned so far */
    unsigned char seq[4];        /* a UTF-8 sequence cut by the end of a feed */
    size_t seq_have, seq_len;    /* its bytes received and its full length (0: none pending) */
    size_t frame_bytes;          /* bytes of the current frame so far: prefix, '#', body */
    struct sbuf held;            /* the current frame's body bytes from earlier feeds */
    uint64_t examined;           /* bytes looked at so far (scanned, copied or parsed); only
                                  * grows: tests prove linearity with it */
};

void codec_decoder_init(struct codec_decoder *d, size_t max_units);
/* Frees what the decoder holds; it may be initialised again. */
void codec_decoder_cleanup(struct codec_decoder *d);
/*
 * Feeds buf[0..len), the next bytes of the stream. *used tells how many of them were taken:
 *  CODEC_COMPLETE:  one frame decoded into *out (out->consumed is its whole size); the frame
 *                   ended at buf[*used - 1]: feed the rest (buf + *used) again.
 *  CODEC_NEED_MORE: all of buf was taken and remembered (*used == len).
 *  CODEC_ERROR:     malformed; *why is a static phrase; the stream is unusable (close it).
 */
int codec_decoder_feed(struct codec_decoder *d, const char *buf, size_t len,
                       struct codec_frame *out, const char **why, size_t *used);
/* True while a frame has begun (some of its bytes were fed) and is not complete. */
bool codec_decoder_partial(const struct codec_decoder *d);

/*
 * Encodes msg as one frame, escaping every non-ASCII character as \uXXXX so that the length in
 * UTF-16 units equals the byte count. Returns a new NUL-terminated buffer (free with free()) and
 * its length in *len.
 */
char *codec_encode(const cJSON *msg, size_t *len);

/* Counts the UTF-16 code units of a UTF-8 string; -1 if it is not valid UTF-8. */
long long codec_utf16_units(const char *s, size_t len);

#endif
