/*
 * wxp_http.c - the HTTP client on libcurl: one easy handle per client,
 * kept between requests so that its connection stays open.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/utsname.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Response headers beyond this count are a broken or hostile server. */
#define MAX_HEADERS 100

struct wxp_http {
  CURL *easy;
  wxp_http_options options;
  char *user_agent;
  char *ca_file;
  char *proxy;
  X509_STORE *trust;     /* loaded once, at the first https request */
  char curl_error[CURL_ERROR_SIZE];
};

/* What a transfer is writing into, for the callbacks. */
typedef struct transfer {
  wxp_http_result *result;
  size_t max_body;
  int headers_done;    /* the blank line seen: what follows is trailers */
  int too_large;
  int too_many_headers;
  int out_of_memory;
} transfer;

const char *wxp_http_curl_version(void)
{
  return curl_version_info(CURLVERSION_NOW)->version;
}


void wxp_http_system(char *out, size_t size)
{
  struct utsname u;

  if (uname(&u) != 0)
    snprintf(out, size, "unknown");
  else
    snprintf(out, size, "%s %s", u.sysname, u.machine);
}


static char *copy_string(const char *s)
{
  return s ? strdup(s) : NULL;
}


wxp_status wxp_http_new(const wxp_http_options *options, wxp_http **out,
                        char *errbuf)
{
  static int curl_ready;
  wxp_http *http;

  *out = NULL;
  /* Not thread-safe, like curl_global_init itself: call it from one. */
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return wxp_fail(errbuf, WXP_ENETWORK, "libcurl failed to start");
    curl_ready = 1;
  }

  http = calloc(1, sizeof(*http));
  if (!http)
    return WXP_ENOMEM;
  http->options = *options;
  http->user_agent = copy_string(options->user_agent);
  http->ca_file = copy_string(options->ca_file);
  http->proxy = copy_string(options->proxy);
  http->easy = curl_easy_init();
  if (!http->easy || (options->user_agent && !http->user_agent)
      || (options->ca_file && !http->ca_file)
      || (options->proxy && !http->proxy)) {
    wxp_http_free(http);
    return wxp_fail(errbuf, WXP_ENOMEM, "cannot create a libcurl handle");
  }

  *out = http;
  return WXP_OK;
}


void wxp_http_free(wxp_http *http)
{
  if (!http)
    return;
  if (http->easy)
    curl_easy_cleanup(http->easy);
  free(http->user_agent);
  free(http->ca_file);
  free(http->proxy);
  X509_STORE_free(http->trust);
  free(http);
}


static void clear_headers(wxp_http_result *result)
{
  size_t i;

  for (i = 0; i < result->header_count; i++) {
    free(result->headers[i].name);
    free(result->headers[i].value);
  }
  free(result->headers);
  result->headers = NULL;
  result->header_count = 0;
}


void wxp_http_result_free(wxp_http_result *result)
{
  clear_headers(result);
  wxp_buf_free(&result->body);
}

/* {====================================================================
 * Callbacks
 * ===================================================================== */

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
  transfer *t = user;
  size_t n = size * count;

  if (t->result->body.len + n > t->max_body) {
    t->too_large = 1;
    return 0;
  }
  if (wxp_buf_append(&t->result->body, data, n) != WXP_OK) {
    t->out_of_memory = 1;
    return 0;
  }
  return n;
}


/* Trims spaces, tabs and the line end from both ends of [s, s+len). */
static const char *trim(const char *s, size_t *len)
{
  while (*len && (*s == ' ' || *s == '\t')) {
    s++;
    (*len)--;
  }
  while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t'
                  || s[*len - 1] == '\r' || s[*len - 1] == '\n'))
    (*len)--;
  return s;
}


static int add_header(wxp_http_result *r, const char *name, size_t name_len,
                      const char *value, size_t value_len)
{
  wxp_header *h;

  if (r->header_count % 8 == 0) {
    h = realloc(r->headers, (r->header_count + 8) * sizeof(*h));
    if (!h)
      return 0;
    r->headers = h;
  }
  h = &r->headers[r->header_count];
  h->name = strndup(name, name_len);
  h->value = strndup(value, value_len);
  if (!h->name || !h->value) {
    free(h->name);
    free(h->value);
    return 0;
  }
  r->header_count++;
  return 1;
}


/*
 * Keeps the headers of the last response only (not of a 100 Continue),
 * and not the trailers that may follow a chunked body.
 */
static size_t on_header(char *data, size_t size, size_t count, void *user)
{
  transfer *t = user;
  size_t n = size * count;
  size_t name_len;
  size_t value_len;
  const char *colon = memchr(data, ':', n);
  const char *value;

  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    clear_headers(t->result);
    t->headers_done = 0;
    return n;
  }
  if ((n == 2 && data[0] == '\r') || (n == 1 && data[0] == '\n')) {
    t->headers_done = 1;
    return n;
  }
  if (!colon || t->headers_done)
    return n;
  if (t->result->header_count >= MAX_HEADERS) {
    t->too_many_headers = 1;
    return 0;
  }

  name_len = (size_t)(colon - data);
  value_len = n - name_len - 1;
  value = trim(colon + 1, &value_len);
  if (!add_header(t->result, data, name_len, value, value_len)) {
    t->out_of_memory = 1;
    return 0;
  }
  return n;
}

/* {====================================================================
 * Requests
 * ===================================================================== */

static wxp_net_error classify(CURLcode code)
{
  switch (code) {
  case CURLE_COULDNT_CONNECT:
    return WXP_NET_CONNECT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return WXP_NET_RESOLVE;
  case CURLE_OPERATION_TIMEDOUT:
    return WXP_NET_TIMEOUT;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
    return WXP_NET_TLS;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
    return WXP_NET_RESET;
  case CURLE_PARTIAL_FILE:
    return WXP_NET_TRUNCATED;
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_WEIRD_SERVER_REPLY:
    return WXP_NET_PROTOCOL;
  default:
    return WXP_NET_OTHER;
  }
}


/*
 * Loads the trusted CAs once: ca_file, or OpenSSL's default paths (the
 * system bundle).  libcurl 7.88 would read the bundle again for every new
 * connection, about 20 ms of CPU with Debian's, which every registration
 * (always on a new connection) would pay.
 */
static wxp_status load_trust(wxp_http *http, char *errbuf)
{
  X509_STORE *store;
  int ok;

  if (http->trust)
    return WXP_OK;
  store = X509_STORE_new();
  if (!store)
    return WXP_ENOMEM;
  if (http->ca_file)
    ok = X509_STORE_load_file(store, http->ca_file) == 1;
  else
    ok = X509_STORE_set_default_paths(store) == 1;
  if (!ok) {
    X509_STORE_free(store);
    return wxp_fail_ssl(errbuf, WXP_ENETWORK, "cannot load the CA "
                        "certificates from %s", http->ca_file ? http->ca_file
                        : "the system's default paths");
  }
  http->trust = store;
  return WXP_OK;
}


/* Gives each TLS connection the trust store loaded by load_trust. */
static CURLcode on_ssl_ctx(CURL *easy, void *ssl_ctx, void *user)
{
  wxp_http *http = user;

  (void)easy;
  SSL_CTX_set1_cert_store(ssl_ctx, http->trust);
  return CURLE_OK;
}


/* Sets the method and body; GET sends none, DELETE only when given. */
static CURLcode set_method(CURL *easy, const wxp_http_request *req)
{
  int with_body = strcmp(req->method, "DELETE") != 0 || req->body;
  CURLcode rc;

  if (strcmp(req->method, "GET") == 0)
    return curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  rc = curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
  if (rc == CURLE_OK && with_body) {
    rc = curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)req->body_len);
    if (rc == CURLE_OK)
      rc = curl_easy_setopt(easy, CURLOPT_POSTFIELDS,
                            req->body ? req->body : "");
  }
  return rc;
}


/*
 * Marks each socket close-on-exec, so that child processes of the program
 * (os.execute, io.popen) do not inherit the connection.
 */
static int on_socket(void *user, curl_socket_t fd, curlsocktype purpose)
{
  int flags = fcntl(fd, F_GETFD);

  (void)user;
  (void)purpose;
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
    return CURL_SOCKOPT_ERROR;
  return CURL_SOCKOPT_OK;
}


/*
 * Sets every option for one request.  curl_easy_reset keeps the open
 * connections, so keep-alive survives it.  TLS peer and host checks stay
 * at libcurl's defaults, which verify; nothing here turns them off.  The
 * path goes out as given, because it is what the request signature
 * covers.  Proxies come only from the options, never from http_proxy and
 * the like, so that signed requests do not leave through a proxy the
 * program never chose.
 */
static CURLcode set_options(wxp_http *http, const wxp_http_request *req,
                            struct curl_slist *list, transfer *t)
{
  CURL *e = http->easy;
  CURLcode rc = CURLE_OK;
  long timeout = req->timeout_ms > 0 ? req->timeout_ms
                                     : http->options.timeout_ms;
  long connect = http->options.connect_timeout_ms;

  if (connect > timeout)
    connect = timeout;
  curl_easy_reset(e);
#define SET(opt, val) \
  if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
  SET(CURLOPT_URL, req->url);
  SET(CURLOPT_PATH_AS_IS, 1L);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_PROXY, http->proxy ? http->proxy : "");
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_SOCKOPTFUNCTION, on_socket);
  SET(CURLOPT_FRESH_CONNECT, req->fresh ? 1L : 0L);
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  SET(CURLOPT_CONNECTTIMEOUT_MS, connect);
  SET(CURLOPT_TIMEOUT_MS, timeout);
  SET(CURLOPT_HTTPHEADER, list);
  SET(CURLOPT_ERRORBUFFER, http->curl_error);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, t);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, t);
  if (http->user_agent)
    SET(CURLOPT_USERAGENT, http->user_agent);
  /* The CAs come from the store that on_ssl_ctx installs, not from files
   * libcurl would read on each connection. */
  SET(CURLOPT_CAINFO, (char *)NULL);
  SET(CURLOPT_CAPATH, (char *)NULL);
  SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
  SET(CURLOPT_SSL_CTX_DATA, http);
#undef SET
  if (rc == CURLE_OK)
    rc = set_method(e, req);
  return rc;
}


/* Builds the header list; "Expect:" stops curl's 100-continue wait. */
static struct curl_slist *header_list(const char *const *headers,
                                      size_t count)
{
  struct curl_slist *list = curl_slist_append(NULL, "Expect:");
  struct curl_slist *next;
  size_t i;

  for (i = 0; list && i < count; i++) {
    next = curl_slist_append(list, headers[i]);
    if (!next) {
      curl_slist_free_all(list);
      return NULL;
    }
    list = next;
  }
  return list;
}


static wxp_status transfer_failed(wxp_http *http, CURLcode code,
                                  const transfer *t, char *errbuf)
{
  wxp_http_result *r = t->result;
  const char *detail = http->curl_error[0] ? http->curl_error
                                           : curl_easy_strerror(code);

  if (t->out_of_memory)
    return WXP_ENOMEM;
  if (t->too_large) {
    r->net_error = WXP_NET_TOO_LARGE;
    return wxp_fail(errbuf, WXP_ENETWORK,
                    "response body is larger than %zu bytes", t->max_body);
  }
  if (t->too_many_headers) {
    r->net_error = WXP_NET_PROTOCOL;
    return wxp_fail(errbuf, WXP_ENETWORK,
                    "response has more than %d headers", MAX_HEADERS);
  }
  r->net_error = classify(code);
  return wxp_fail(errbuf, WXP_ENETWORK, "%s", detail);
}


wxp_status wxp_http_perform(wxp_http *http, const wxp_http_request *req,
                            wxp_http_result *result, char *errbuf)
{
  struct curl_slist *list;
  transfer t;
  CURLcode code;
  long sent = 0;

  memset(result, 0, sizeof(*result));
  memset(&t, 0, sizeof(t));
  t.result = result;
  t.max_body = http->options.max_response_size;
  http->curl_error[0] = '\0';

  if (strncmp(req->url, "https:", 6) == 0) {
    wxp_status rc = load_trust(http, errbuf);
    if (rc != WXP_OK) {
      result->net_error = WXP_NET_TLS;
      return rc;
    }
  }

  list = header_list(req->headers, req->header_count);
  if (!list)
    return WXP_ENOMEM;
  code = set_options(http, req, list, &t);
  if (code == CURLE_OK)
    code = curl_easy_perform(http->easy);
  curl_slist_free_all(list);

  curl_easy_getinfo(http->easy, CURLINFO_REQUEST_SIZE, &sent);
  result->request_sent = sent > 0;
  if (code != CURLE_OK)
    return transfer_failed(http, code, &t, errbuf);

  curl_easy_getinfo(http->easy, CURLINFO_RESPONSE_CODE, &result->status);
  return WXP_OK;
}
