/* SPDX-License-Identifier: MIT */
/*
 * body: decides whether a verified request body is a usable event, and
 * reads the few fields hookd indexes (event type, chatbot id, thread id).
 *
 * The checks are those PostgreSQL's jsonb will apply later, so that a body
 * accepted here can always be stored: valid UTF-8, strict JSON, a single
 * object with nothing but white space after it, bounded nesting, no \u0000
 * and no lone UTF-16 surrogate escapes. Pure code, no logging.
 */
#ifndef HOOKD_BODY_H
#define HOOKD_BODY_H

#include <stddef.h>

#include <json-c/json.h>

enum body_class {
    BODY_OK = 0,
    BODY_EMPTY,
    BODY_INVALID_UTF8,
    BODY_INVALID_JSON,
    BODY_TOO_DEEP,
    BODY_UNSUPPORTED_ESCAPE,
    BODY_NOT_OBJECT,
    BODY_NO_EVENT
};

struct body_event {
    json_object *be_root;      /* owned; release with body_event_clear */
    const char *be_type;       /* the "event" string, inside be_root */
    char *be_chatbot_id;       /* data.chatbotId as text (a string, or an
                                * integer that fits 64 bits), else NULL */
    char *be_thread_id;        /* data.threadId, the same way */
};

/*
 * Classifies len bytes. On BODY_OK fills *ret (the caller clears it);
 * otherwise *ret is left empty. max_depth bounds object/array nesting.
 */
enum body_class body_classify(const unsigned char *body, size_t len, int max_depth,
                              struct body_event *ret);

/* Releases what body_classify filled in; safe on an empty event. */
void body_event_clear(struct body_event *ev);

/* Short reason for a class, for the 400 answer and the quarantine row. */
const char *body_class_reason(enum body_class c);

/* True when len bytes are well-formed UTF-8 (no overlongs, no surrogates). */
int body_utf8_valid(const unsigned char *s, size_t len);

#endif
