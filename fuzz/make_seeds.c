/*
 * make_seeds.c - writes the seeds of fuzz/corpus/ that need the test key
 * or the test APIv3 key: certificates, encrypted /v3/certificates
 * responses and signed response headers.  fuzz/make-seeds.sh runs it.
 * SPDX-License-Identifier: MIT
 *
 * Usage: make_seeds CORPUS_DIR.  It writes into the existing folders
 * CORPUS_DIR/<target>/ and stops at the first failure.
 */
#include "fuzz_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIVE_YEARS (5 * 365 * INT64_C(86400))

static const char *corpus_dir;

/*
 * Passed as a field value, this pointer (not its text) writes the one
 * NUL byte that the targets read as an absent value.
 */
static const char absent[] = "absent";

static void die(const char *message, const char *detail)
{
  fprintf(stderr, "make_seeds: %s%s%s\n", message, detail ? ": " : "",
          detail ? detail : "");
  exit(1);
}


static void append(wxp_buf *buf, const char *text)
{
  if (wxp_buf_append(buf, text, strlen(text)) != WXP_OK)
    die("out of memory", NULL);
}


static void write_seed(const char *target, const char *name,
                       const char *data, size_t len)
{
  char path[4096];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s/%s", corpus_dir, target, name);
  f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
    die("cannot write", path);
}


/* Appends a field value and the newline that ends it. */
static void append_field(wxp_buf *buf, const char *value)
{
  if (value == absent) {
    if (wxp_buf_append(buf, "", 1) != WXP_OK)
      die("out of memory", NULL);
  } else {
    append(buf, value);
  }
  append(buf, "\n");
}


/* Replaces every "\n" with "\r\n". */
static void to_crlf(const wxp_buf *in, wxp_buf *out)
{
  size_t i;

  for (i = 0; i < in->len; i++) {
    if (in->data[i] == '\n')
      append(out, "\r");
    if (wxp_buf_append(out, in->data + i, 1) != WXP_OK)
      die("out of memory", NULL);
  }
}


/* Issues a self-signed certificate for the test key. */
static void issue_cert(const char *serial, wxp_buf *pem)
{
  wxp_cert_request request;
  char err[WXP_ERRBUF_SIZE];

  memset(&request, 0, sizeof(request));
  request.subject_key_pem = fuzz_test_key_pem;
  request.serial_hex = serial;
  request.common_name = "Tenpay.com Root CA fuzz test";
  request.not_before = FUZZ_NOW - 86400;
  request.not_after = FUZZ_NOW + FIVE_YEARS;
  if (wxp_test_cert_issue(&request, pem, err) != WXP_OK)
    die("cannot issue a certificate", err);
}


/* Appends one entry of the certificates response; aad NULL is null. */
static void append_entry(wxp_buf *body, const char *serial,
                         const wxp_buf *pem, const char *nonce,
                         const char *aad)
{
  wxp_buf ciphertext = { 0 };
  char err[WXP_ERRBUF_SIZE];

  if (wxp_aead_encrypt(fuzz_apiv3_key, FUZZ_APIV3_KEY_SIZE, nonce,
                       strlen(nonce), aad ? aad : "", aad ? strlen(aad) : 0,
                       pem->data, pem->len, &ciphertext, err) != WXP_OK)
    die("cannot encrypt a certificate", err);
  append(body, "{\"effective_time\":\"2023-11-13T22:13:20+08:00\","
               "\"encrypt_certificate\":{\"algorithm\":\"AEAD_AES_256_GCM\","
               "\"associated_data\":");
  append(body, aad ? "\"" : "null");
  append(body, aad ? aad : "");
  append(body, aad ? "\"" : "");
  append(body, ",\"ciphertext\":\"");
  append(body, ciphertext.data);
  append(body, "\",\"nonce\":\"");
  append(body, nonce);
  append(body, "\"},\"expire_time\":\"2028-11-11T22:13:20+08:00\","
               "\"serial_no\":\"");
  append(body, serial);
  append(body, "\"}");
  wxp_buf_free(&ciphertext);
}


static void certs_parse_seeds(const wxp_buf *pem, const wxp_buf *pem2)
{
  wxp_buf body = { 0 };

  append(&body, "{\"data\":[");
  append_entry(&body, FUZZ_TEST_SERIAL, pem, "61f9c719728a", "certificate");
  append(&body, "]}");
  write_seed("certs_parse", "official-one-certificate.json", body.data,
             body.len);
  wxp_buf_free(&body);

  append(&body, "{\"data\":[");
  append_entry(&body, FUZZ_TEST_SERIAL, pem, "a1b2c3d4e5f6", "certificate");
  append(&body, ",");
  append_entry(&body, "0A1B", pem2, "0123456789ab", NULL);
  append(&body, "]}");
  write_seed("certs_parse", "two-certificates-null-aad.json", body.data,
             body.len);
  wxp_buf_free(&body);

  append(&body, "{\"data\":[");
  append_entry(&body, "0A1C", pem, "61f9c719728a", "certificate");
  append(&body, "]}");
  write_seed("certs_parse", "serial-mismatch.json", body.data, body.len);
  wxp_buf_free(&body);
}


/* Writes serial_no, nonce and associated_data lines, then the text. */
static void write_wrapped(const char *name, const char *serial,
                          const char *nonce, const char *aad,
                          const char *text, size_t len)
{
  wxp_buf seed = { 0 };

  append_field(&seed, serial);
  append_field(&seed, nonce);
  append_field(&seed, aad);
  if (wxp_buf_append(&seed, text, len) != WXP_OK)
    die("out of memory", NULL);
  write_seed("certs_wrapped", name, seed.data, seed.len);
  wxp_buf_free(&seed);
}


static void certs_wrapped_seeds(const wxp_buf *pem, const wxp_buf *pem2)
{
  wxp_buf crlf = { 0 };

  write_wrapped("official.txt", FUZZ_TEST_SERIAL, "61f9c719728a",
                "certificate", pem->data, pem->len);
  write_wrapped("leading-zero-serial.txt", "0a1b", "0123456789ab", "",
                pem2->data, pem2->len);
  write_wrapped("absent-aad.txt", FUZZ_TEST_SERIAL, "61f9c719728a", absent,
                pem->data, pem->len);
  to_crlf(pem, &crlf);
  write_wrapped("crlf.txt", FUZZ_TEST_SERIAL, "61f9c719728a", "certificate",
                crlf.data, crlf.len);
  write_wrapped("truncated.txt", FUZZ_TEST_SERIAL, "61f9c719728a",
                "certificate", pem->data, pem->len / 2);
  wxp_buf_free(&crlf);
}


/*
 * Writes the four header lines and the body.  A NULL signature is
 * replaced by the test key's signature over the response message.
 */
static void write_headers(const wxp_key *key, const char *name,
                          const char *serial, const char *timestamp,
                          const char *nonce, const char *signature,
                          const char *body)
{
  wxp_buf message = { 0 };
  wxp_buf signed_value = { 0 };
  wxp_buf seed = { 0 };
  char err[WXP_ERRBUF_SIZE];

  if (!signature) {
    if (wxp_response_message(timestamp, nonce, body, strlen(body), &message)
        != WXP_OK
        || wxp_sign(key, message.data, message.len, &signed_value, err)
           != WXP_OK)
      die("cannot sign", err);
    signature = signed_value.data;
  }
  append_field(&seed, serial);
  append_field(&seed, timestamp);
  append_field(&seed, nonce);
  append_field(&seed, signature);
  append(&seed, body);
  write_seed("store_verify", name, seed.data, seed.len);
  wxp_buf_free(&seed);
  wxp_buf_free(&signed_value);
  wxp_buf_free(&message);
}


static void store_verify_seeds(const wxp_key *key)
{
  char now[24];
  char stale[24];
  static const char nonce[] = "593BEC0C930BF1AFEB40B4A08C8FB242";
  static const char body[] =
    "{\"guide_id\":\"LLA3WJ6DSZUfiaZDS79FH5Wm5m4X69TBic\","
    "\"amount\":12345678901234567}";
  static const char probe[] =
    "WECHATPAY/SIGNTEST/mQmLXf+xyG5E7Xm1eP0lYqk2hOJXo7Q3Vr2Ka1b0wWM=";

  snprintf(now, sizeof(now), "%" PRId64, FUZZ_NOW);
  snprintf(stale, sizeof(stale), "%" PRId64, FUZZ_NOW - 600);
  write_headers(key, "signed.txt", FUZZ_TEST_SERIAL, now, nonce, NULL,
                body);
  write_headers(key, "signed-empty-body.txt", FUZZ_TEST_SERIAL, now, nonce,
                NULL, "");
  write_headers(key, "signtest-probe.txt", FUZZ_TEST_SERIAL, now, nonce,
                probe, body);
  write_headers(key, "stale-timestamp.txt", FUZZ_TEST_SERIAL, stale, nonce,
                NULL, body);
  write_headers(key, "unknown-serial.txt", "PUB_KEY_ID_0114232134912410",
                now, nonce, NULL, body);
  write_headers(key, "missing-signature.txt", FUZZ_TEST_SERIAL, now, nonce,
                absent, body);
  write_headers(key, "timestamp-milliseconds.txt", FUZZ_TEST_SERIAL,
                "1700000000000", nonce, NULL, body);
}


static void key_load_seeds(const wxp_buf *pem)
{
  wxp_buf crlf = { 0 };
  wxp_buf both = { 0 };

  write_seed("key_load", "test-pkcs8-private-key.pem", fuzz_test_key_pem,
             strlen(fuzz_test_key_pem));
  write_seed("key_load", "test-certificate.pem", pem->data, pem->len);
  to_crlf(pem, &crlf);
  write_seed("key_load", "test-certificate-crlf.pem", crlf.data, crlf.len);
  write_seed("key_load", "test-certificate-truncated.pem", pem->data,
             pem->len * 2 / 3);
  append(&both, "Bag Attributes\n    friendlyName: fuzz\n");
  append(&both, fuzz_test_key_pem);
  append(&both, pem->data);
  write_seed("key_load", "test-key-and-certificate.pem", both.data, both.len);
  wxp_buf_free(&crlf);
  wxp_buf_free(&both);
}


int main(int argc, char **argv)
{
  wxp_buf pem = { 0 };
  wxp_buf pem2 = { 0 };
  wxp_key *key = NULL;
  char err[WXP_ERRBUF_SIZE];

  if (argc != 2)
    die("usage: make_seeds CORPUS_DIR", NULL);
  corpus_dir = argv[1];
  if (wxp_key_load_private(fuzz_test_key_pem, strlen(fuzz_test_key_pem),
                           &key, err) != WXP_OK)
    die("cannot load the test key", err);

  issue_cert(FUZZ_TEST_SERIAL, &pem);
  issue_cert("0A1B", &pem2);
  certs_parse_seeds(&pem, &pem2);
  certs_wrapped_seeds(&pem, &pem2);
  store_verify_seeds(key);
  key_load_seeds(&pem);

  wxp_key_free(key);
  wxp_buf_free(&pem);
  wxp_buf_free(&pem2);
  return 0;
}
