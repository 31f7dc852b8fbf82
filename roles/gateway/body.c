/* Raw JSON pre-checks: one pass over the bytes, tracking strings, escapes and nesting. */
#include "body.h"

#include <string.h>

#include "util.h"

int
body_check_raw(const char *s, size_t len, int max_depth)
{
    if (memchr(s, '\0', len) != NULL) {
        return BODY_NUL;
    }
    if (!util_utf8_valid(s, len)) {
        return BODY_BAD_UTF8;
    }
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) {
                    return BODY_NUL;
                }
                i++; /* skip the escaped character, so \" and \\ do not end or start anything */
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                return BODY_TOO_DEEP;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return BODY_OK;
}

const char *
body_check_message(int result)
{
    switch (result) {
    case BODY_BAD_UTF8: return "the body is not valid UTF-8";
    case BODY_NUL: return "NUL characters are not accepted";
    case BODY_TOO_DEEP: return "the JSON is nested too deeply";
    default: return "the body is fine";
    }
}
