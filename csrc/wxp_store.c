/*
 * wxp_store.c - the keys that verify responses and encrypt fields, looked
 * up by the serial the platform names (a certificate serial or a public
 * key ID), and response verification against them.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct wxp_store {
  wxp_store_entry *entries;
  size_t count;
  size_t cap;
};

wxp_store *wxp_store_new(void)
{
  return calloc(1, sizeof(wxp_store));
}


static void entry_clear(wxp_store_entry *entry)
{
  free(entry->serial);
  wxp_key_free(entry->key);
}


void wxp_store_free(wxp_store *store)
{
  size_t i;

  if (!store)
    return;
  for (i = 0; i < store->count; i++)
    entry_clear(&store->entries[i]);
  free(store->entries);
  free(store);
}


static wxp_store_entry *find_entry(const wxp_store *store,
                                   const char *serial)
{
  size_t i;

  for (i = 0; i < store->count; i++) {
    if (strcmp(store->entries[i].serial, serial) == 0)
      return &store->entries[i];
  }
  return NULL;
}


/* Returns the slot for serial: the existing entry or a new one. */
static wxp_store_entry *claim_slot(wxp_store *store, const char *serial)
{
  wxp_store_entry *slot = find_entry(store, serial);
  wxp_store_entry *grown;
  size_t cap;

  if (slot) {
    entry_clear(slot);
    return slot;
  }
  if (store->count == store->cap) {
    cap = store->cap ? store->cap * 2 : 4;
    grown = realloc(store->entries, cap * sizeof(*grown));
    if (!grown)
      return NULL;
    store->entries = grown;
    store->cap = cap;
  }
  return &store->entries[store->count++];
}


wxp_status wxp_store_put(wxp_store *store, const char *serial, wxp_key *key,
                         int64_t not_before, int64_t not_after,
                         wxp_source source)
{
  char *serial_copy = strdup(serial);
  wxp_key *ref = wxp_key_ref(key);
  wxp_store_entry *slot = NULL;

  if (serial_copy && ref)
    slot = claim_slot(store, serial);
  if (!slot) {
    free(serial_copy);
    wxp_key_free(ref);
    return WXP_ENOMEM;
  }

  slot->serial = serial_copy;
  slot->key = ref;
  slot->not_before = not_before;
  slot->not_after = not_after;
  slot->source = source;
  return WXP_OK;
}


/* Removes the entry at index, keeping the others in order. */
static void remove_at(wxp_store *store, size_t index)
{
  entry_clear(&store->entries[index]);
  memmove(&store->entries[index], &store->entries[index + 1],
          (store->count - index - 1) * sizeof(wxp_store_entry));
  store->count--;
}


int wxp_store_remove(wxp_store *store, const char *serial)
{
  wxp_store_entry *entry = find_entry(store, serial);

  if (!entry)
    return 0;
  remove_at(store, (size_t)(entry - store->entries));
  return 1;
}


size_t wxp_store_expire(wxp_store *store, int64_t now)
{
  size_t removed = 0;
  size_t i = 0;

  while (i < store->count) {
    if (store->entries[i].not_after <= now) {
      remove_at(store, i);
      removed++;
    } else {
      i++;
    }
  }
  return removed;
}


size_t wxp_store_count(const wxp_store *store)
{
  return store->count;
}


const wxp_store_entry *wxp_store_at(const wxp_store *store, size_t index)
{
  return index < store->count ? &store->entries[index] : NULL;
}


const wxp_store_entry *wxp_store_find(const wxp_store *store,
                                      const char *serial)
{
  return find_entry(store, serial);
}


const wxp_store_entry *wxp_store_newest(const wxp_store *store, int64_t now)
{
  const wxp_store_entry *best = NULL;
  const wxp_store_entry *e;
  size_t i;

  for (i = 0; i < store->count; i++) {
    e = &store->entries[i];
    if (e->not_before > now || e->not_after <= now)
      continue;
    if (!best || e->not_after > best->not_after)
      best = e;
  }
  return best;
}


/* Parses a decimal Unix timestamp; 0 when it is not one. */
static int parse_timestamp(const char *text, int64_t *out)
{
  char *end;
  long long v;

  if (*text < '0' || *text > '9')
    return 0;
  errno = 0;
  v = strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0')
    return 0;
  *out = (int64_t)v;
  return 1;
}


/* Names the first missing header, or returns NULL. */
static const char *missing_header(const char *serial, const char *timestamp,
                                  const char *nonce, const char *signature)
{
  if (!serial)
    return "Wechatpay-Serial";
  if (!timestamp)
    return "Wechatpay-Timestamp";
  if (!nonce)
    return "Wechatpay-Nonce";
  if (!signature)
    return "Wechatpay-Signature";
  return NULL;
}


wxp_status wxp_store_verify(const wxp_store *store, const char *serial,
                            const char *timestamp, const char *nonce,
                            const char *signature, const char *body,
                            size_t body_len, int64_t now, int64_t window,
                            char *errbuf)
{
  const char *missing = missing_header(serial, timestamp, nonce, signature);
  const wxp_store_entry *entry;
  wxp_buf message = { 0 };
  int64_t ts;
  wxp_status rc;

  if (missing)
    return wxp_fail(errbuf, WXP_EMISSING, "header %s is missing", missing);
  if (!parse_timestamp(timestamp, &ts))
    return wxp_fail(errbuf, WXP_EHEADER,
                    "header Wechatpay-Timestamp is not a Unix timestamp");
  if (ts <= now - window || ts >= now + window)
    return wxp_fail(errbuf, WXP_ESTALE,
                    "Wechatpay-Timestamp is %lld seconds from the local "
                    "clock; at most %lld are accepted, so check the clock",
                    (long long)(ts - now), (long long)window - 1);

  /* A probe must fail before the serial can trigger a download. */
  if (wxp_is_probe(signature, strlen(signature)))
    return wxp_fail(errbuf, WXP_EPROBE,
                    "signature is a WECHATPAY/SIGNTEST/ probe, which never "
                    "verifies");

  entry = find_entry(store, serial);
  if (!entry)
    return wxp_fail(errbuf, WXP_ESERIAL,
                    "no certificate or public key with serial \"%.80s\"",
                    serial);

  rc = wxp_response_message(timestamp, nonce, body, body_len, &message);
  if (rc == WXP_OK)
    rc = wxp_verify(entry->key, message.data, message.len, signature,
                    strlen(signature), errbuf);
  wxp_buf_free(&message);
  return rc;
}
