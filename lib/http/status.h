/* status.h — reason phrases of HTTP status codes (lm_status), for status lines and problem
 * titles. Pure and thread-safe. */
#ifndef LM_STATUS_H
#define LM_STATUS_H

/* The RFC 9110 reason phrase of status; "Unknown" for a code it does not list. */
const char *lm_status_reason(int status);

#endif
