/* amqp_url.h — EVENT_BROKER_URL: amqp://user:pass@host:port/vhost (lm_amqp_url).
 *
 * The RabbitMQ URI form (https://www.rabbitmq.com/uri-spec.html) without TLS: user,
 * password and vhost are percent-decoded ("%2f" is the vhost "/"); user and password default
 * to guest/guest, the port to 5672, an absent vhost to "/" (an empty one, "amqp://h/", is the
 * vhost "" as the spec says, which RabbitMQ refuses: it is refused here already). IPv6 hosts
 * as "[::1]". No query string, no fragment, no "amqps" (one clear reason each).
 *
 * Pure: no allocation, no I/O, callable from any thread. */
#ifndef LM_AMQP_URL_H
#define LM_AMQP_URL_H

#include <stddef.h>

typedef struct lm_amqp_url {
    char user[128];
    char password[128];
    char host[256]; /* IPv6 without brackets */
    int port;
    char vhost[256];
} lm_amqp_url;

/* Parses url into out. Returns 0, or -1 with a one-line reason (without the password) in
 * err. */
int lm_amqp_url_parse(const char *url, lm_amqp_url *out, char *err, size_t errlen);

/* "amqp://user@host:port/vhost" (the password left out, vhost percent-encoded) into out, for
 * logs; truncated to outlen. */
void lm_amqp_url_redacted(const lm_amqp_url *u, char *out, size_t outlen);

#endif
