/*
 * wxp_message.c - the APIv3 request and response messages, and the
 * Authorization header.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Appends value and the "\n" that ends every line of a message. */
static wxp_status append_line(wxp_buf *out, const char *value, size_t len)
{
  wxp_status rc = wxp_buf_append(out, value, len);

  if (rc == WXP_OK)
    rc = wxp_buf_append(out, "\n", 1);
  return rc;
}


wxp_status wxp_request_message(const char *method, const char *url,
                               int64_t timestamp, const char *nonce,
                               const char *body, size_t body_len,
                               wxp_buf *out)
{
  char ts[24];
  wxp_status rc;

  snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
  rc = append_line(out, method, strlen(method));
  if (rc == WXP_OK)
    rc = append_line(out, url, strlen(url));
  if (rc == WXP_OK)
    rc = append_line(out, ts, strlen(ts));
  if (rc == WXP_OK)
    rc = append_line(out, nonce, strlen(nonce));
  if (rc == WXP_OK)
    rc = append_line(out, body ? body : "", body ? body_len : 0);
  return rc;
}


wxp_status wxp_response_message(const char *timestamp, const char *nonce,
                                const char *body, size_t body_len,
                                wxp_buf *out)
{
  wxp_status rc = append_line(out, timestamp, strlen(timestamp));

  if (rc == WXP_OK)
    rc = append_line(out, nonce, strlen(nonce));
  if (rc == WXP_OK)
    rc = append_line(out, body ? body : "", body ? body_len : 0);
  return rc;
}


/*
 * A header value must stay on one line and inside its quotes: refuse
 * quotes, backslashes and control characters.
 */
static int is_header_safe(const char *s)
{
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
      return 0;
  }
  return 1;
}


wxp_status wxp_authorization(const wxp_key *key, const char *mchid,
                             const char *serial_no, const char *method,
                             const char *url, const char *body,
                             size_t body_len, int64_t timestamp,
                             const char *nonce, wxp_buf *out, char *errbuf)
{
  char fresh[33];
  char head[256];
  wxp_buf message = { 0 };
  wxp_buf signature = { 0 };
  wxp_status rc;
  int n;

  if (!is_header_safe(mchid) || !is_header_safe(serial_no)
      || (nonce && !is_header_safe(nonce)))
    return wxp_fail(errbuf, WXP_EINVAL,
                    "mchid, serial_no and nonce must not contain quotes, "
                    "backslashes or control characters");
  if (!nonce) {
    rc = wxp_nonce(fresh, errbuf);
    if (rc != WXP_OK)
      return rc;
    nonce = fresh;
  }

  n = snprintf(head, sizeof(head),
               "WECHATPAY2-SHA256-RSA2048 mchid=\"%s\",nonce_str=\"%s\","
               "timestamp=\"%" PRId64 "\",serial_no=\"%s\",signature=\"",
               mchid, nonce, timestamp, serial_no);
  if (n < 0 || (size_t)n >= sizeof(head))
    return wxp_fail(errbuf, WXP_EINVAL,
                    "mchid, serial_no or nonce is too long");

  rc = wxp_request_message(method, url, timestamp, nonce, body, body_len,
                           &message);
  if (rc == WXP_OK)
    rc = wxp_sign(key, message.data, message.len, &signature, errbuf);
  if (rc == WXP_OK)
    rc = wxp_buf_append(out, head, (size_t)n);
  if (rc == WXP_OK)
    rc = wxp_buf_append(out, signature.data, signature.len);
  if (rc == WXP_OK)
    rc = wxp_buf_append(out, "\"", 1);

  wxp_buf_free(&message);
  wxp_buf_free(&signature);
  return rc;
}
