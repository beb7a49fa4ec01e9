/* SPDX-License-Identifier: MIT */
#include "body.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


const char *
body_class_reason(enum body_class c)
{
    switch (c) {
    case BODY_OK:
        return "ok";
    case BODY_EMPTY:
        return "empty body";
    case BODY_INVALID_UTF8:
        return "body is not valid UTF-8";
    case BODY_INVALID_JSON:
        return "body is not valid JSON";
    case BODY_TOO_DEEP:
        return "JSON nested too deeply";
    case BODY_UNSUPPORTED_ESCAPE:
        return "JSON escapes a NUL character or a lone surrogate";
    case BODY_NOT_OBJECT:
        return "JSON is not an object";
    case BODY_NO_EVENT:
        return "no event string";
    }
    return "unknown";
}


int
body_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        unsigned cp;
        unsigned min;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (len - i <= need) {
            return 0;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += need + 1;
    }
    return 1;
}


static int
hex4(const unsigned char *p, size_t left, unsigned *ret)
{
    unsigned v = 0;

    if (left < 4) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];

        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -1;
        }
    }
    *ret = v;
    return 0;
}


/* Length of a JSON number at s (RFC 8259 grammar), or 0 when it is not one. */
static size_t
number_len(const unsigned char *s, size_t left)
{
    size_t i = 0;

    if (i < left && s[i] == '-') {
        i++;
    }
    if (i < left && s[i] == '0') {
        i++;
    } else if (i < left && s[i] >= '1' && s[i] <= '9') {
        while (i < left && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    } else {
        return 0;
    }
    if (i < left && s[i] == '.') {
        size_t digits = ++i;

        while (i < left && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == digits) {
            return 0;
        }
    }
    if (i < left && (s[i] == 'e' || s[i] == 'E')) {
        size_t digits;

        i++;
        if (i < left && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        digits = i;
        while (i < left && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == digits) {
            return 0;
        }
    }
    /* A number runs into a delimiter, never straight into more text. */
    if (i < left && !memchr(" \t\r\n,]}", s[i], 7)) {
        return 0;
    }
    return i;
}


/*
 * A lexical pass with PostgreSQL's rules, for what a lenient parser might
 * let through but jsonb refuses: outside strings only white space, the six
 * structural characters, true/false/null and RFC 8259 numbers (no NaN,
 * Infinity, "5." or "01"); inside strings no raw control character, no
 * \u0000, and no lone UTF-16 surrogate escape. Structure is left to json-c.
 */
static enum body_class
scan_lexical(const unsigned char *s, size_t len, int max_depth)
{
    static const char *const words[] = {"true", "false", "null"};
    bool in_string = false;
    int depth = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned cp;
        unsigned low;

        if (!in_string) {
            size_t n = 0;

            if (s[i] == '"') {
                in_string = true;
                continue;
            }
            if (s[i] == '{' || s[i] == '[') {
                /* Nesting counts objects and arrays, not the scalars in them. */
                if (++depth > max_depth) {
                    return BODY_TOO_DEEP;
                }
                continue;
            }
            if (s[i] == '}' || s[i] == ']') {
                depth--;
                continue;
            }
            if (memchr(" \t\r\n:,", s[i], 6) != NULL) {
                continue;
            }
            for (size_t w = 0; w < 3 && n == 0; w++) {
                size_t wl = strlen(words[w]);

                if (len - i >= wl && memcmp(s + i, words[w], wl) == 0) {
                    n = wl;
                }
            }
            if (n == 0) {
                n = number_len(s + i, len - i);
            }
            if (n == 0) {
                return BODY_INVALID_JSON;
            }
            i += n - 1;
            continue;
        }
        if (s[i] < 0x20) {
            return BODY_INVALID_JSON;
        }
        if (s[i] == '"') {
            in_string = false;
            continue;
        }
        if (s[i] != '\\' || i + 1 >= len) {
            continue;
        }
        i++;
        if (s[i] != 'u' || hex4(s + i + 1, len - i - 1, &cp) < 0) {
            continue;
        }
        i += 4;
        if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
            return BODY_UNSUPPORTED_ESCAPE;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (i + 2 >= len || s[i + 1] != '\\' || s[i + 2] != 'u'
                || hex4(s + i + 3, len - i - 3, &low) < 0 || low < 0xdc00 || low > 0xdfff)
            {
                return BODY_UNSUPPORTED_ESCAPE;
            }
            i += 6;
        }
    }
    return BODY_OK;
}


/* A scalar field of data as text: strings as they are, numbers printed. */
static char *
field_text(json_object *data, const char *name)
{
    json_object *v;

    if (data == NULL || !json_object_object_get_ex(data, name, &v) || v == NULL) {
        return NULL;
    }
    switch (json_object_get_type(v)) {
    case json_type_string:
        return strndup(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    case json_type_int: {
        /* json-c saturates outside 64 bits; a saturated value is not what
         * was sent, so it is no id. (The stored columns are taken by
         * PostgreSQL from the raw text and are always exact.) */
        int64_t n = json_object_get_int64(v);
        char text[24];

        if (n == INT64_MIN) {
            return NULL;
        }
        if (n == INT64_MAX) {
            uint64_t u = json_object_get_uint64(v);

            if (u == UINT64_MAX) {
                return NULL;
            }
            snprintf(text, sizeof(text), "%llu", (unsigned long long)u);
        } else {
            snprintf(text, sizeof(text), "%lld", (long long)n);
        }
        return strdup(text);
    }
    case json_type_double:
        /* json-c keeps the text of a parsed double and prints it back. */
        return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    default:
        return NULL;
    }
}


enum body_class
body_classify(const unsigned char *body, size_t len, int max_depth, struct body_event *ret)
{
    struct json_tokener *tok;
    json_object *root;
    json_object *ev;
    json_object *data = NULL;
    enum json_tokener_error jerr;
    enum body_class scan;
    size_t used;

    memset(ret, 0, sizeof(*ret));
    if (len == 0) {
        return BODY_EMPTY;
    }
    if (!body_utf8_valid(body, len)) {
        return BODY_INVALID_UTF8;
    }
    scan = scan_lexical(body, len, max_depth);
    if (scan != BODY_OK) {
        return scan;
    }
    if (len > (size_t)0x7fffffff) {
        return BODY_INVALID_JSON;
    }
    /* The lexical pass bounded the nesting; json-c also counts scalars. */
    tok = json_tokener_new_ex(max_depth + 1);
    if (tok == NULL) {
        return BODY_INVALID_JSON;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, (const char *)body, (int)len);
    jerr = json_tokener_get_error(tok);
    used = json_tokener_get_parse_end(tok);
    if (root == NULL && jerr == json_tokener_continue) {
        /* A value that only ends at the end of input, like a bare number. */
        root = json_tokener_parse_ex(tok, " ", 1);
        jerr = json_tokener_get_error(tok);
        used = len;
    }
    json_tokener_free(tok);
    if (root == NULL || jerr != json_tokener_success) {
        json_object_put(root);
        return jerr == json_tokener_error_depth ? BODY_TOO_DEEP : BODY_INVALID_JSON;
    }
    for (size_t i = used; i < len; i++) {
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n') {
            json_object_put(root);
            return BODY_INVALID_JSON;
        }
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return BODY_NOT_OBJECT;
    }
    if (!json_object_object_get_ex(root, "event", &ev) || !json_object_is_type(ev, json_type_string)
        || json_object_get_string_len(ev) == 0)
    {
        json_object_put(root);
        return BODY_NO_EVENT;
    }
    if (json_object_object_get_ex(root, "data", &data)
        && !json_object_is_type(data, json_type_object))
    {
        data = NULL;
    }
    ret->be_root = root;
    ret->be_type = json_object_get_string(ev);
    ret->be_chatbot_id = field_text(data, "chatbotId");
    ret->be_thread_id = field_text(data, "threadId");
    return BODY_OK;
}


void
body_event_clear(struct body_event *ev)
{
    json_object_put(ev->be_root);
    free(ev->be_chatbot_id);
    free(ev->be_thread_id);
    memset(ev, 0, sizeof(*ev));
}
