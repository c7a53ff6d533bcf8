/*
 * wxp.h - the C core of lua-wechatpay: keys, certificates, APIv3 signing
 * and verification, RSA-OAEP, AES-GCM, the key store and the HTTP client.
 * SPDX-License-Identifier: MIT
 *
 * Conventions: every function that can fail returns a wxp_status and, on
 * failure only, writes a one-line message into errbuf (WXP_ERRBUF_SIZE
 * bytes, may be NULL).  Outputs go through out-parameters and belong to
 * the caller.  Nothing here does I/O except wxp_http_perform().
 */
#ifndef WXP_H
#define WXP_H

#include <stddef.h>
#include <stdint.h>

#define WXP_VERSION "0.1.0"
#define WXP_ERRBUF_SIZE 512

/* Verification rejects a response whose timestamp is this far off. */
#define WXP_DEFAULT_WINDOW 300

typedef enum wxp_status {
  WXP_OK = 0,
  WXP_ENOMEM,          /* out of memory */
  WXP_EINVAL,          /* invalid argument */
  WXP_EKEY,            /* key or certificate could not be loaded */
  WXP_ECRYPTO,         /* an OpenSSL operation failed */
  WXP_EDECRYPT,        /* ciphertext rejected: wrong key or tampered */
  WXP_EMISSING,        /* a required header or field is absent */
  WXP_ESTALE,          /* timestamp outside the accepted window */
  WXP_EHEADER,         /* a header is present but malformed */
  WXP_EPROBE,          /* WECHATPAY/SIGNTEST/ probe signature */
  WXP_ESERIAL,         /* no key in the store for this serial */
  WXP_ESIGNATURE,      /* signature does not match */
  WXP_EJSON,           /* invalid JSON or unexpected JSON shape */
  WXP_ENETWORK,        /* transport failure, see wxp_http_result */
  WXP_STATUS_COUNT
} wxp_status;

/* Returns a static description of a status code. */
const char *wxp_strerror(wxp_status status);

/* A growable byte buffer.  Always NUL-terminated when data != NULL. */
typedef struct wxp_buf {
  char *data;
  size_t len;
  size_t cap;
} wxp_buf;

/* Makes room for extra more bytes and the terminating NUL. */
wxp_status wxp_buf_reserve(wxp_buf *buf, size_t extra);
wxp_status wxp_buf_append(wxp_buf *buf, const void *data, size_t len);
void wxp_buf_free(wxp_buf *buf);
/* Overwrites the contents before freeing: for plaintext and keys. */
void wxp_buf_wipe(wxp_buf *buf);

/* ---------------------------------------------------------------------
 * Encoding helpers
 */

/* Standard base64 with padding.  out receives the text. */
wxp_status wxp_base64_encode(const void *data, size_t len, wxp_buf *out);

/*
 * Strict standard base64: padding required, no whitespace, no other
 * characters.  WXP_EINVAL on anything else.
 */
wxp_status wxp_base64_decode(const char *text, size_t len, wxp_buf *out,
                             char *errbuf);

/*
 * Checks that text is UTF-8 that the platform accepts: well formed, no
 * surrogates, no overlong forms and no 4-byte characters.  On failure
 * returns WXP_EINVAL and sets *offset to the first bad byte.
 */
wxp_status wxp_utf8_check(const char *text, size_t len, size_t *offset,
                          char *errbuf);

/* Writes 32 upper-case hex digits from the OpenSSL random generator. */
wxp_status wxp_nonce(char out[33], char *errbuf);

/* Seconds from a clock that never jumps, for deadlines. */
double wxp_monotonic(void);

/* Blocks the calling thread for seconds (a retry's back-off). */
void wxp_sleep(double seconds);

/* ---------------------------------------------------------------------
 * Keys and certificates
 */

typedef struct wxp_key wxp_key;
typedef struct wxp_cert wxp_cert;

/*
 * Loads an RSA private key from PEM text: PKCS#8 ("PRIVATE KEY") or
 * PKCS#1 ("RSA PRIVATE KEY"), LF or CRLF, with other text around it.
 * A passphrase-protected key, a public key or a certificate is rejected
 * with a message naming what was found and what was expected.
 */
wxp_status wxp_key_load_private(const char *pem, size_t len, wxp_key **out,
                                char *errbuf);

/*
 * Loads an RSA public key from PEM text: "PUBLIC KEY", "RSA PUBLIC KEY",
 * or the key of a "CERTIFICATE".
 */
wxp_status wxp_key_load_public(const char *pem, size_t len, wxp_key **out,
                               char *errbuf);

/* Returns a new reference to the same key. */
wxp_key *wxp_key_ref(wxp_key *key);
void wxp_key_free(wxp_key *key);
int wxp_key_bits(const wxp_key *key);
int wxp_key_is_private(const wxp_key *key);

/* Returns 1 when both keys have the same RSA public part. */
int wxp_key_same_public(const wxp_key *a, const wxp_key *b);

/* Loads one X.509 certificate from PEM text. */
wxp_status wxp_cert_load(const char *pem, size_t len, wxp_cert **out,
                         char *errbuf);
void wxp_cert_free(wxp_cert *cert);

/*
 * The serial as the platform writes it: upper-case hex, two digits a
 * byte, a leading zero kept (0x0A1B is "0A1B").
 */
const char *wxp_cert_serial(const wxp_cert *cert);
int64_t wxp_cert_not_before(const wxp_cert *cert);
int64_t wxp_cert_not_after(const wxp_cert *cert);
/* Borrowed: valid while the certificate lives; use wxp_key_ref to keep. */
wxp_key *wxp_cert_key(const wxp_cert *cert);

/* ---------------------------------------------------------------------
 * Signatures, RSA-OAEP and AES-GCM
 */

/* SHA256withRSA (PKCS#1 v1.5) of message, base64 in out. */
wxp_status wxp_sign(const wxp_key *key, const char *message, size_t len,
                    wxp_buf *out, char *errbuf);

/*
 * Verifies a base64 SHA256withRSA signature.  WXP_OK when it matches,
 * WXP_EPROBE for a WECHATPAY/SIGNTEST/ probe, WXP_ESIGNATURE when it does
 * not match or is not base64.  The OpenSSL error queue is empty after.
 */
wxp_status wxp_verify(const wxp_key *key, const char *message, size_t len,
                      const char *signature, size_t sig_len, char *errbuf);

/*
 * RSA-OAEP with SHA-1 and MGF1-SHA1, the padding APIv3 uses for
 * sensitive fields.  encrypt writes base64 ciphertext; decrypt takes
 * base64 and writes plaintext, which the caller wipes.
 */
wxp_status wxp_oaep_encrypt(const wxp_key *key, const char *plain,
                            size_t len, wxp_buf *out, char *errbuf);
wxp_status wxp_oaep_decrypt(const wxp_key *key, const char *cipher_b64,
                            size_t len, wxp_buf *out, char *errbuf);

/*
 * AES-GCM with a 16-byte tag appended to the ciphertext, base64, as in
 * AEAD_AES_256_GCM.  The key may be 16, 24 or 32 bytes; the APIv3 key is
 * always 32, which the client checks when it is configured.  decrypt
 * always checks the tag and returns WXP_EDECRYPT when it does not match.
 */
wxp_status wxp_aead_encrypt(const unsigned char *key, size_t key_len,
                            const char *nonce, size_t nonce_len,
                            const char *aad, size_t aad_len,
                            const char *plain, size_t len, wxp_buf *out,
                            char *errbuf);
wxp_status wxp_aead_decrypt(const unsigned char *key, size_t key_len,
                            const char *nonce, size_t nonce_len,
                            const char *aad, size_t aad_len,
                            const char *cipher_b64, size_t len, wxp_buf *out,
                            char *errbuf);

/* ---------------------------------------------------------------------
 * APIv3 messages
 */

/*
 * The request message: method, URL path with query exactly as sent,
 * timestamp, nonce and body, each line ended by "\n".
 */
wxp_status wxp_request_message(const char *method, const char *url,
                               int64_t timestamp, const char *nonce,
                               const char *body, size_t body_len,
                               wxp_buf *out);

/*
 * Signs a request and writes the whole Authorization header value:
 * WECHATPAY2-SHA256-RSA2048 mchid="...",nonce_str="...",... .  When
 * nonce is NULL a fresh one is drawn.
 */
wxp_status wxp_authorization(const wxp_key *key, const char *mchid,
                             const char *serial_no, const char *method,
                             const char *url, const char *body,
                             size_t body_len, int64_t timestamp,
                             const char *nonce, wxp_buf *out, char *errbuf);

/* The response and callback message: timestamp, nonce and body. */
wxp_status wxp_response_message(const char *timestamp, const char *nonce,
                                const char *body, size_t body_len,
                                wxp_buf *out);

/* ---------------------------------------------------------------------
 * The key store: keys that verify responses and encrypt fields, by serial
 */

typedef enum wxp_source {
  WXP_SOURCE_PUBLIC_KEY = 0,   /* the configured WeChat Pay public key */
  WXP_SOURCE_DOWNLOAD,         /* a certificate from /v3/certificates */
  WXP_SOURCE_CONFIG            /* a platform certificate given by the user */
} wxp_source;

/* Entries without an expiry (a public key) use WXP_NEVER. */
#define WXP_NEVER INT64_MAX

typedef struct wxp_store wxp_store;

typedef struct wxp_store_entry {
  char *serial;             /* owned by the store */
  wxp_key *key;             /* borrowed from the store */
  int64_t not_before;
  int64_t not_after;
  wxp_source source;
} wxp_store_entry;

wxp_store *wxp_store_new(void);
void wxp_store_free(wxp_store *store);

/*
 * Adds a key under a serial, replacing an entry with the same serial.
 * The store takes its own reference to key.
 */
wxp_status wxp_store_put(wxp_store *store, const char *serial, wxp_key *key,
                         int64_t not_before, int64_t not_after,
                         wxp_source source);
int wxp_store_remove(wxp_store *store, const char *serial);

/* Drops entries whose not_after has passed; returns how many. */
size_t wxp_store_expire(wxp_store *store, int64_t now);

size_t wxp_store_count(const wxp_store *store);
const wxp_store_entry *wxp_store_at(const wxp_store *store, size_t index);
const wxp_store_entry *wxp_store_find(const wxp_store *store,
                                      const char *serial);

/*
 * The entry to encrypt with: valid at now, latest not_after, so a public
 * key (which never expires) wins over certificates.  NULL when none.
 */
const wxp_store_entry *wxp_store_newest(const wxp_store *store, int64_t now);

/*
 * Verifies a response or callback.  Any of serial, timestamp, nonce and
 * signature may be NULL, which fails with WXP_EMISSING.  Then the
 * timestamp must be a decimal number (WXP_EHEADER) within window seconds
 * of now (WXP_ESTALE), the
 * signature must not be a probe (WXP_EPROBE), the serial must be in the
 * store (WXP_ESERIAL) and the signature must match (WXP_ESIGNATURE).
 */
wxp_status wxp_store_verify(const wxp_store *store, const char *serial,
                            const char *timestamp, const char *nonce,
                            const char *signature, const char *body,
                            size_t body_len, int64_t now, int64_t window,
                            char *errbuf);

/* ---------------------------------------------------------------------
 * The /v3/certificates response
 */

typedef struct wxp_cert_list {
  size_t count;
  wxp_cert **certs;
} wxp_cert_list;

/*
 * Parses a /v3/certificates body, decrypts every entry with the APIv3 key
 * and checks that each certificate's serial equals its serial_no.  Any
 * bad entry fails the whole response.
 */
wxp_status wxp_certs_parse(const char *body, size_t len,
                           const unsigned char *apiv3_key, size_t key_len,
                           wxp_cert_list *out, char *errbuf);
void wxp_cert_list_free(wxp_cert_list *list);

/* ---------------------------------------------------------------------
 * JSON
 */

struct cJSON;

/*
 * Parses exactly one JSON value that fills text (whitespace around it is
 * allowed).  A string holding \u0000 is refused, because cJSON would cut
 * it there.  On failure returns NULL and sets *error_offset (0-based).
 */
struct cJSON *wxp_json_parse(const char *text, size_t len,
                             size_t *error_offset);

/*
 * Walks the number tokens of a JSON text in document order, so that a
 * decoder built on cJSON (which keeps numbers as doubles) can read
 * integers exactly.  Returns 1 and sets the token when there is one.
 */
typedef struct wxp_json_numbers {
  const char *text;
  size_t len;
  size_t pos;
} wxp_json_numbers;

int wxp_json_next_number(wxp_json_numbers *it, const char **token,
                         size_t *token_len);

/* ---------------------------------------------------------------------
 * HTTP client (libcurl): the only part of the core that does I/O
 */

typedef struct wxp_http wxp_http;

typedef struct wxp_http_options {
  long connect_timeout_ms;
  long timeout_ms;             /* the whole request, at least 1 */
  size_t max_response_size;    /* body bytes; larger responses fail */
  const char *user_agent;
  const char *ca_file;         /* NULL: the system's trust store */
  const char *proxy;           /* NULL: none, whatever the environment */
} wxp_http_options;

typedef struct wxp_http_request {
  const char *method;
  const char *url;             /* sent as given: no dot-segment removal */
  const char *const *headers;  /* "Name: value" strings */
  size_t header_count;
  const char *body;            /* NULL: none; never sent with GET */
  size_t body_len;
  int fresh;                   /* on a new connection: see below */
  long timeout_ms;             /* 0: the client's timeout */
} wxp_http_request;

typedef struct wxp_header {
  char *name;
  char *value;
} wxp_header;

/* What failed in the transport, for callers that retry. */
typedef enum wxp_net_error {
  WXP_NET_NONE = 0,
  WXP_NET_CONNECT,     /* connection refused or unreachable: not sent */
  WXP_NET_RESOLVE,     /* host name not resolved: not sent */
  WXP_NET_TIMEOUT,
  WXP_NET_TLS,         /* handshake or certificate verification */
  WXP_NET_RESET,       /* connection closed or reset */
  WXP_NET_TOO_LARGE,   /* response over max_response_size */
  WXP_NET_TRUNCATED,   /* body shorter than Content-Length */
  WXP_NET_PROTOCOL,    /* not HTTP, or a URL scheme we refuse */
  WXP_NET_OTHER
} wxp_net_error;

typedef struct wxp_http_result {
  long status;
  wxp_header *headers;
  size_t header_count;
  wxp_buf body;
  wxp_net_error net_error;
  int request_sent;    /* 1 once request bytes went out */
} wxp_http_result;

wxp_status wxp_http_new(const wxp_http_options *options, wxp_http **out,
                        char *errbuf);
void wxp_http_free(wxp_http *http);

/*
 * Sends one request and fills result, which the caller releases with
 * wxp_http_result_free even on failure.  A non-2xx status is not a
 * failure here.  Trailers of a chunked response are not headers: they
 * are dropped.
 *
 * When libcurl reuses a kept-alive connection and the server closes it
 * without answering, libcurl sends the request again on a new connection,
 * although the server may have carried it out.  Set fresh for a request
 * that must not be repeated (a registration): it then goes on a new
 * connection, which libcurl never retries.
 */
wxp_status wxp_http_perform(wxp_http *http, const wxp_http_request *request,
                            wxp_http_result *result, char *errbuf);
void wxp_http_result_free(wxp_http_result *result);

/* The libcurl version and "<os> <machine>", for the User-Agent. */
const char *wxp_http_curl_version(void);
void wxp_http_system(char *out, size_t size);

/* ---------------------------------------------------------------------
 * Test keys and certificates, for the sandbox and the specs
 */

/* Generates an RSA private key and writes it as PKCS#8 PEM. */
wxp_status wxp_test_key_generate(int bits, wxp_buf *pem, char *errbuf);

typedef struct wxp_cert_request {
  const char *subject_key_pem;   /* the key the certificate is for */
  const char *issuer_key_pem;    /* NULL: self-signed */
  const char *issuer_cert_pem;   /* NULL: self-signed */
  const char *serial_hex;        /* upper- or lower-case hex */
  const char *common_name;
  int64_t not_before;
  int64_t not_after;
  int is_ca;
  const char *dns_name;          /* subjectAltName entries, may be NULL */
  const char *ip_address;
} wxp_cert_request;

/* Issues an X.509 certificate and writes it as PEM. */
wxp_status wxp_test_cert_issue(const wxp_cert_request *request, wxp_buf *pem,
                               char *errbuf);

#endif
