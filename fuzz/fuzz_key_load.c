/*
 * fuzz_key_load.c - libFuzzer target for the PEM loaders:
 * wxp_key_load_private, wxp_key_load_public and wxp_cert_load, each on
 * the whole input.
 * SPDX-License-Identifier: MIT
 *
 * Invariants: a loader sets *out exactly when it returns WXP_OK and
 * writes a message otherwise.  A loaded key is RSA of at least 2048 bits
 * and is private only from wxp_key_load_private.  A certificate serial
 * is upper-case hex.  When the input names no "PUBLIC KEY", the first
 * public-key block is the first certificate, so wxp_key_load_public and
 * wxp_cert_load must return the same key.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

/* Checks the outcome that every loader shares. */
static void check_outcome(wxp_status rc, const void *out, const char *err)
{
  FUZZ_ASSERT(rc == WXP_OK || rc == WXP_EKEY || rc == WXP_ENOMEM);
  if (rc == WXP_OK) {
    FUZZ_ASSERT(out != NULL);
  } else {
    FUZZ_ASSERT(out == NULL);
    FUZZ_ASSERT(rc == WXP_ENOMEM || err[0] != '\0');
  }
}


static int is_upper_hex(const char *s)
{
  size_t len = strlen(s);
  size_t i;

  if (len == 0 || len % 2 != 0)
    return 0;
  for (i = 0; i < len; i++) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
      return 0;
  }
  return 1;
}


static int contains(const uint8_t *data, size_t size, const char *needle)
{
  size_t n = strlen(needle);
  size_t i;

  for (i = 0; i + n <= size; i++) {
    if (memcmp(data + i, needle, n) == 0)
      return 1;
  }
  return 0;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *pem = (const char *)data;
  char err[WXP_ERRBUF_SIZE];
  wxp_key *private_key = NULL;
  wxp_key *public_key = NULL;
  wxp_cert *cert = NULL;
  wxp_status rc;

  err[0] = '\0';
  rc = wxp_key_load_private(pem, size, &private_key, err);
  check_outcome(rc, private_key, err);
  if (private_key) {
    FUZZ_ASSERT(wxp_key_is_private(private_key));
    FUZZ_ASSERT(wxp_key_bits(private_key) >= 2048);
  }

  err[0] = '\0';
  rc = wxp_key_load_public(pem, size, &public_key, err);
  check_outcome(rc, public_key, err);
  if (public_key) {
    FUZZ_ASSERT(!wxp_key_is_private(public_key));
    FUZZ_ASSERT(wxp_key_bits(public_key) >= 2048);
  }

  err[0] = '\0';
  rc = wxp_cert_load(pem, size, &cert, err);
  check_outcome(rc, cert, err);
  if (cert) {
    FUZZ_ASSERT(is_upper_hex(wxp_cert_serial(cert)));
    FUZZ_ASSERT(wxp_key_bits(wxp_cert_key(cert)) >= 2048);
    FUZZ_ASSERT(!wxp_key_is_private(wxp_cert_key(cert)));
    if (!contains(data, size, "PUBLIC KEY")) {
      FUZZ_ASSERT(public_key != NULL);
      FUZZ_ASSERT(wxp_key_same_public(public_key, wxp_cert_key(cert)));
    }
  }

  wxp_key_free(private_key);
  wxp_key_free(public_key);
  wxp_cert_free(cert);
  return 0;
}
