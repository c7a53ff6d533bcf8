/*
 * lwxp.c - the Lua binding of the C core: the module wechatpay.core.
 * SPDX-License-Identifier: MIT
 *
 * Misuse (a wrong argument type) raises.  Failures of the operation
 * itself return nil and a message, plus a short code where callers need
 * to tell failures apart (verification, transport).
 */
#include "lwxp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define PRIVATE_KEY_MT "wechatpay.PrivateKey"
#define PUBLIC_KEY_MT "wechatpay.PublicKey"
#define CERTIFICATE_MT "wechatpay.Certificate"
#define AEAD_KEY_MT "wechatpay.AeadKey"
#define STORE_MT "wechatpay.Store"
#define HTTP_MT "wechatpay.Http"
#define BOX_MT "wechatpay.box"

#define MAX_AEAD_KEY 32

typedef struct l_key {
  wxp_key *key;
} l_key;

typedef struct l_cert {
  wxp_cert *cert;
} l_cert;

typedef struct l_aead {
  unsigned char key[MAX_AEAD_KEY];
  size_t len;
} l_aead;

typedef struct l_store {
  wxp_store *store;
} l_store;

typedef struct l_http {
  wxp_http *http;
} l_http;

/* {====================================================================
 * Boxes
 * ===================================================================== */

void lwxp_box_release(lwxp_box *box)
{
  if (box->kind == LWXP_BOX_SECRET)
    wxp_buf_wipe(&box->buf);
  else
    wxp_buf_free(&box->buf);
  if (box->ptr && box->free_ptr)
    box->free_ptr(box->ptr);
  box->ptr = NULL;
}


static int box_gc(lua_State *L)
{
  lwxp_box_release(luaL_checkudata(L, 1, BOX_MT));
  return 0;
}


lwxp_box *lwxp_newbox(lua_State *L, lwxp_box_kind kind)
{
  lwxp_box *box = lua_newuserdata(L, sizeof(*box));

  memset(box, 0, sizeof(*box));
  box->kind = kind;
  luaL_getmetatable(L, BOX_MT);
  lua_setmetatable(L, -2);
  return box;
}


/* Pushes the box's buffer as a string, then releases the box. */
static int push_box(lua_State *L, lwxp_box *box)
{
  lua_pushlstring(L, box->buf.data ? box->buf.data : "", box->buf.len);
  lwxp_box_release(box);
  return 1;
}


/* Pushes nil and errbuf (or the status text when errbuf is empty). */
static int push_failure(lua_State *L, wxp_status rc, const char *errbuf)
{
  if (rc == WXP_ENOMEM)
    return luaL_error(L, "out of memory");
  lua_pushnil(L);
  lua_pushstring(L, errbuf[0] ? errbuf : wxp_strerror(rc));
  return 2;
}

/* {====================================================================
 * Keys
 * ===================================================================== */

static l_key *check_private(lua_State *L, int index)
{
  l_key *k = luaL_checkudata(L, index, PRIVATE_KEY_MT);

  if (!k->key)
    luaL_argerror(L, index, "private key is closed");
  return k;
}


static l_key *check_public(lua_State *L, int index)
{
  l_key *k = luaL_checkudata(L, index, PUBLIC_KEY_MT);

  if (!k->key)
    luaL_argerror(L, index, "public key is closed");
  return k;
}


/* Pushes a key userdata that takes ownership of key. */
static void push_key(lua_State *L, wxp_key *key, const char *mt)
{
  l_key *k = lua_newuserdata(L, sizeof(*k));

  k->key = NULL;
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
  k->key = key;
}


static int l_load_private_key(lua_State *L)
{
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_key *key;
  wxp_status rc;

  push_key(L, NULL, PRIVATE_KEY_MT);
  rc = wxp_key_load_private(pem, len, &key, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  ((l_key *)lua_touserdata(L, -1))->key = key;
  return 1;
}


static int l_load_public_key(lua_State *L)
{
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_key *key;
  wxp_status rc;

  push_key(L, NULL, PUBLIC_KEY_MT);
  rc = wxp_key_load_public(pem, len, &key, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  ((l_key *)lua_touserdata(L, -1))->key = key;
  return 1;
}


static int key_close(lua_State *L)
{
  l_key *k = lua_touserdata(L, 1);

  if (k) {
    wxp_key_free(k->key);
    k->key = NULL;
  }
  return 0;
}


/* A core operation on a key and a string: sign, encrypt or decrypt. */
typedef wxp_status (*key_operation)(const wxp_key *key, const char *data,
                                    size_t len, wxp_buf *out, char *errbuf);

/*
 * Runs op on the key and the string at index 2; pushes the result or nil
 * and a message.  A secret result is wiped once pushed.
 */
static int run_key_operation(lua_State *L, l_key *k, key_operation op,
                             lwxp_box_kind kind)
{
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lwxp_box *box = lwxp_newbox(L, kind);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc = op(k->key, data, len, &box->buf, errbuf);

  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return push_box(L, box);
}


static int private_sign(lua_State *L)
{
  return run_key_operation(L, check_private(L, 1), wxp_sign, LWXP_BOX_BUF);
}


static int private_decrypt(lua_State *L)
{
  return run_key_operation(L, check_private(L, 1), wxp_oaep_decrypt,
                           LWXP_BOX_SECRET);
}


static int key_bits(lua_State *L)
{
  l_key *k = lua_touserdata(L, 1);

  luaL_argcheck(L, k && k->key, 1, "key is closed");
  lua_pushinteger(L, wxp_key_bits(k->key));
  return 1;
}


/* private:matches(public) -> true when they form a key pair */
static int private_matches(lua_State *L)
{
  l_key *priv = check_private(L, 1);
  l_key *pub = check_public(L, 2);

  lua_pushboolean(L, wxp_key_same_public(priv->key, pub->key));
  return 1;
}


static int public_verify(lua_State *L)
{
  l_key *k = check_public(L, 1);
  size_t len;
  size_t sig_len;
  const char *message = luaL_checklstring(L, 2, &len);
  const char *sig = luaL_checklstring(L, 3, &sig_len);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc = wxp_verify(k->key, message, len, sig, sig_len, errbuf);

  if (rc == WXP_ENOMEM)
    return luaL_error(L, "out of memory");
  lua_pushboolean(L, rc == WXP_OK);
  if (rc == WXP_OK)
    return 1;
  lua_pushstring(L, errbuf);
  return 2;
}


static int public_encrypt(lua_State *L)
{
  return run_key_operation(L, check_public(L, 1), wxp_oaep_encrypt,
                           LWXP_BOX_BUF);
}


static int key_tostring(lua_State *L)
{
  l_key *k = lua_touserdata(L, 1);
  const char *kind = luaL_getmetafield(L, 1, "__name") ? lua_tostring(L, -1)
                                                       : "key";

  if (!k->key)
    lua_pushfstring(L, "%s (closed)", kind);
  else
    lua_pushfstring(L, "%s (RSA %d bits)", kind, wxp_key_bits(k->key));
  return 1;
}

/* {====================================================================
 * Certificates
 * ===================================================================== */

static l_cert *check_cert(lua_State *L, int index)
{
  l_cert *c = luaL_checkudata(L, index, CERTIFICATE_MT);

  if (!c->cert)
    luaL_argerror(L, index, "certificate is closed");
  return c;
}


static void push_cert(lua_State *L, wxp_cert *cert)
{
  l_cert *c = lua_newuserdata(L, sizeof(*c));

  c->cert = NULL;
  luaL_getmetatable(L, CERTIFICATE_MT);
  lua_setmetatable(L, -2);
  c->cert = cert;
}


static int l_load_certificate(lua_State *L)
{
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_cert *cert;
  wxp_status rc;

  push_cert(L, NULL);
  rc = wxp_cert_load(pem, len, &cert, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  ((l_cert *)lua_touserdata(L, -1))->cert = cert;
  return 1;
}


static int cert_close(lua_State *L)
{
  l_cert *c = lua_touserdata(L, 1);

  if (c) {
    wxp_cert_free(c->cert);
    c->cert = NULL;
  }
  return 0;
}


static int cert_serial(lua_State *L)
{
  lua_pushstring(L, wxp_cert_serial(check_cert(L, 1)->cert));
  return 1;
}


static int cert_not_before(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)wxp_cert_not_before(check_cert(L, 1)->cert));
  return 1;
}


static int cert_not_after(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)wxp_cert_not_after(check_cert(L, 1)->cert));
  return 1;
}


static int cert_public_key(lua_State *L)
{
  l_cert *c = check_cert(L, 1);
  wxp_key *ref;

  push_key(L, NULL, PUBLIC_KEY_MT);
  ref = wxp_key_ref(wxp_cert_key(c->cert));
  if (!ref)
    return luaL_error(L, "out of memory");
  ((l_key *)lua_touserdata(L, -1))->key = ref;
  return 1;
}


static int cert_tostring(lua_State *L)
{
  l_cert *c = luaL_checkudata(L, 1, CERTIFICATE_MT);

  if (!c->cert)
    lua_pushliteral(L, CERTIFICATE_MT " (closed)");
  else
    lua_pushfstring(L, CERTIFICATE_MT " (serial %s)",
                    wxp_cert_serial(c->cert));
  return 1;
}

/* {====================================================================
 * AES-GCM keys
 * ===================================================================== */

static l_aead *check_aead(lua_State *L, int index)
{
  l_aead *a = luaL_checkudata(L, index, AEAD_KEY_MT);

  if (a->len == 0)
    luaL_argerror(L, index, "AES-GCM key is closed");
  return a;
}


/* new_aead_key(bytes) -> key | nil, message; 16, 24 or 32 bytes */
static int l_new_aead_key(lua_State *L)
{
  size_t len;
  const char *bytes = luaL_checklstring(L, 1, &len);
  l_aead *a;

  if (len != 16 && len != 24 && len != 32) {
    lua_pushnil(L);
    lua_pushfstring(L, "AES-GCM key is %d bytes; expected 16, 24 or 32",
                    (int)len);
    return 2;
  }
  a = lua_newuserdata(L, sizeof(*a));
  memcpy(a->key, bytes, len);
  a->len = len;
  luaL_getmetatable(L, AEAD_KEY_MT);
  lua_setmetatable(L, -2);
  return 1;
}


static int aead_close(lua_State *L)
{
  l_aead *a = lua_touserdata(L, 1);

  if (a) {
    OPENSSL_cleanse(a->key, sizeof(a->key));
    a->len = 0;
  }
  return 0;
}


static int aead_size(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)check_aead(L, 1)->len);
  return 1;
}


/* The shape of wxp_aead_encrypt and wxp_aead_decrypt. */
typedef wxp_status (*aead_fn)(const unsigned char *key, size_t key_len,
                              const char *nonce, size_t nonce_len,
                              const char *aad, size_t aad_len,
                              const char *in, size_t len, wxp_buf *out,
                              char *errbuf);


/*
 * Runs fn on the arguments (self, nonce, associated_data, input) and
 * pushes its output from a box of kind box_kind, or nil and a message.
 */
static int aead_call(lua_State *L, aead_fn fn, lwxp_box_kind box_kind)
{
  l_aead *a = check_aead(L, 1);
  size_t nonce_len;
  size_t aad_len;
  size_t len;
  const char *nonce = luaL_checklstring(L, 2, &nonce_len);
  const char *aad = luaL_optlstring(L, 3, "", &aad_len);
  const char *in = luaL_checklstring(L, 4, &len);
  lwxp_box *box = lwxp_newbox(L, box_kind);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  rc = fn(a->key, a->len, nonce, nonce_len, aad, aad_len, in, len,
          &box->buf, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return push_box(L, box);
}


/* key:encrypt(nonce, associated_data, plaintext) -> base64 */
static int aead_encrypt(lua_State *L)
{
  return aead_call(L, wxp_aead_encrypt, LWXP_BOX_BUF);
}


/* key:decrypt(nonce, associated_data, base64) -> plaintext | nil, msg */
static int aead_decrypt(lua_State *L)
{
  return aead_call(L, wxp_aead_decrypt, LWXP_BOX_SECRET);
}


static void cert_list_free(void *list)
{
  wxp_cert_list_free(list);
  free(list);
}


/*
 * key:parse_certificates(body) -> { certificate, ... }
 *   | nil, message, "decrypt" | "certificate" | "format"
 * Decrypts a /v3/certificates response with this (APIv3) key.
 */
static int aead_parse_certificates(lua_State *L)
{
  l_aead *a = check_aead(L, 1);
  size_t len;
  const char *body = luaL_checklstring(L, 2, &len);
  lwxp_box *box = lwxp_newbox(L, LWXP_BOX_POINTER);
  wxp_cert_list *list = calloc(1, sizeof(*list));
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;
  size_t i;

  if (!list)
    return luaL_error(L, "out of memory");
  box->ptr = list;
  box->free_ptr = cert_list_free;
  rc = wxp_certs_parse(body, len, a->key, a->len, list, errbuf);
  if (rc != WXP_OK) {
    push_failure(L, rc, errbuf);
    lua_pushstring(L, rc == WXP_EDECRYPT ? "decrypt"
                      : rc == WXP_EKEY ? "certificate" : "format");
    return 3;
  }

  lua_createtable(L, (int)list->count, 0);
  for (i = 0; i < list->count; i++) {
    push_cert(L, list->certs[i]);
    list->certs[i] = NULL;
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}


static int aead_tostring(lua_State *L)
{
  luaL_checkudata(L, 1, AEAD_KEY_MT);
  lua_pushliteral(L, AEAD_KEY_MT);
  return 1;
}

/* {====================================================================
 * The key store
 * ===================================================================== */

static const char *const source_names[] = {
  "public_key", "download", "config", NULL
};

static wxp_store *check_store(lua_State *L, int index)
{
  l_store *s = luaL_checkudata(L, index, STORE_MT);

  if (!s->store)
    luaL_argerror(L, index, "store is closed");
  return s->store;
}


static int l_new_store(lua_State *L)
{
  l_store *s = lua_newuserdata(L, sizeof(*s));

  s->store = NULL;
  luaL_getmetatable(L, STORE_MT);
  lua_setmetatable(L, -2);
  s->store = wxp_store_new();
  if (!s->store)
    return luaL_error(L, "out of memory");
  return 1;
}


static int store_close(lua_State *L)
{
  l_store *s = lua_touserdata(L, 1);

  if (s) {
    wxp_store_free(s->store);
    s->store = NULL;
  }
  return 0;
}


/* store:put(serial, public_key, not_before, not_after, source) */
static int store_put(lua_State *L)
{
  wxp_store *store = check_store(L, 1);
  const char *serial = luaL_checkstring(L, 2);
  l_key *k = check_public(L, 3);
  lua_Integer not_before = luaL_optinteger(L, 4, 0);
  lua_Integer not_after = luaL_optinteger(L, 5, WXP_NEVER);
  int source = luaL_checkoption(L, 6, "download", source_names);

  if (wxp_store_put(store, serial, k->key, not_before, not_after,
                    (wxp_source)source) != WXP_OK)
    return luaL_error(L, "out of memory");
  return 0;
}


static int store_remove(lua_State *L)
{
  wxp_store *store = check_store(L, 1);

  lua_pushboolean(L, wxp_store_remove(store, luaL_checkstring(L, 2)));
  return 1;
}


static int store_expire(lua_State *L)
{
  wxp_store *store = check_store(L, 1);

  lua_pushinteger(L, (lua_Integer)wxp_store_expire(store,
                                                   luaL_checkinteger(L, 2)));
  return 1;
}


/* Pushes { serial, not_before, not_after, source } for an entry. */
static void push_entry(lua_State *L, const wxp_store_entry *e)
{
  lua_createtable(L, 0, 4);
  lua_pushstring(L, e->serial);
  lua_setfield(L, -2, "serial");
  lua_pushinteger(L, (lua_Integer)e->not_before);
  lua_setfield(L, -2, "not_before");
  if (e->not_after != WXP_NEVER) {
    lua_pushinteger(L, (lua_Integer)e->not_after);
    lua_setfield(L, -2, "not_after");
  }
  lua_pushstring(L, source_names[e->source]);
  lua_setfield(L, -2, "source");
}


/* Pushes a new reference to an entry's key as a PublicKey. */
static void push_entry_key(lua_State *L, const wxp_store_entry *e)
{
  wxp_key *ref;

  push_key(L, NULL, PUBLIC_KEY_MT);
  ref = wxp_key_ref(e->key);
  if (!ref)
    luaL_error(L, "out of memory");
  ((l_key *)lua_touserdata(L, -1))->key = ref;
}


/* store:find(serial) -> entry, public_key | nil */
static int store_find(lua_State *L)
{
  wxp_store *store = check_store(L, 1);
  const wxp_store_entry *e = wxp_store_find(store, luaL_checkstring(L, 2));

  if (!e)
    return 0;
  push_entry(L, e);
  push_entry_key(L, e);
  return 2;
}


/* store:newest(now) -> entry, public_key | nil */
static int store_newest(lua_State *L)
{
  wxp_store *store = check_store(L, 1);
  const wxp_store_entry *e = wxp_store_newest(store,
                                              luaL_checkinteger(L, 2));

  if (!e)
    return 0;
  push_entry(L, e);
  push_entry_key(L, e);
  return 2;
}


static int store_list(lua_State *L)
{
  wxp_store *store = check_store(L, 1);
  size_t n = wxp_store_count(store);
  size_t i;

  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    push_entry(L, wxp_store_at(store, i));
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}


static int store_count(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)wxp_store_count(check_store(L, 1)));
  return 1;
}


static const char *verify_code(wxp_status rc)
{
  switch (rc) {
  case WXP_EMISSING:
    return "missing";
  case WXP_ESTALE:
    return "stale";
  case WXP_EHEADER:
    return "header";
  case WXP_EPROBE:
    return "probe";
  case WXP_ESERIAL:
    return "serial";
  default:
    return "signature";
  }
}


/*
 * store:verify(serial, timestamp, nonce, signature, body, now, window)
 *   -> true | nil, code, message
 * Any of the four header values may be nil (missing).
 */
static int store_verify(lua_State *L)
{
  wxp_store *store = check_store(L, 1);
  const char *serial = luaL_optstring(L, 2, NULL);
  const char *timestamp = luaL_optstring(L, 3, NULL);
  const char *nonce = luaL_optstring(L, 4, NULL);
  const char *signature = luaL_optstring(L, 5, NULL);
  size_t len;
  const char *body = luaL_checklstring(L, 6, &len);
  lua_Integer now = luaL_checkinteger(L, 7);
  lua_Integer window = luaL_optinteger(L, 8, WXP_DEFAULT_WINDOW);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  rc = wxp_store_verify(store, serial, timestamp, nonce, signature, body,
                        len, now, window, errbuf);
  if (rc == WXP_ENOMEM)
    return luaL_error(L, "out of memory");
  if (rc == WXP_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, verify_code(rc));
  lua_pushstring(L, errbuf);
  return 3;
}


static int store_tostring(lua_State *L)
{
  l_store *s = luaL_checkudata(L, 1, STORE_MT);

  lua_pushfstring(L, STORE_MT " (%d keys)",
                  s->store ? (int)wxp_store_count(s->store) : 0);
  return 1;
}

/* {====================================================================
 * HTTP
 * ===================================================================== */

static const char *const net_codes[] = {
  "none", "connect", "resolve", "timeout", "tls", "reset", "too_large",
  "truncated", "protocol", "other"
};

static wxp_http *check_http(lua_State *L, int index)
{
  l_http *h = luaL_checkudata(L, index, HTTP_MT);

  if (!h->http)
    luaL_argerror(L, index, "HTTP client is closed");
  return h->http;
}


/*
 * Converts seconds to milliseconds, rounding up: libcurl reads 0 as "no
 * limit", so a tiny timeout must not become 0.
 */
static long seconds_to_ms(lua_State *L, double seconds, const char *what)
{
  if (!(seconds > 0) || seconds > 86400)
    luaL_error(L, "%s must be a number of seconds between 0 and 86400",
               what);
  return (long)ceil(seconds * 1000);
}


static long opt_ms(lua_State *L, const char *field, double def)
{
  double seconds;

  lua_getfield(L, 1, field);
  seconds = luaL_optnumber(L, -1, def);
  lua_pop(L, 1);
  return seconds_to_ms(L, seconds, field);
}


static const char *opt_field_string(lua_State *L, const char *field)
{
  const char *s;

  lua_getfield(L, 1, field);
  s = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 1);
  return s;
}


/*
 * new_http{ connect_timeout, timeout, max_response_size, user_agent,
 * ca_file, proxy } -> http.  Timeouts are in seconds.
 */
static int l_new_http(lua_State *L)
{
  wxp_http_options o;
  l_http *h;
  lua_Integer max;
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&o, 0, sizeof(o));
  o.connect_timeout_ms = opt_ms(L, "connect_timeout", 5);
  o.timeout_ms = opt_ms(L, "timeout", 10);
  lua_getfield(L, 1, "max_response_size");
  max = luaL_optinteger(L, -1, 1 << 20);
  lua_pop(L, 1);
  luaL_argcheck(L, max > 0, 1, "max_response_size must be positive");
  o.max_response_size = (size_t)max;
  o.user_agent = opt_field_string(L, "user_agent");
  o.ca_file = opt_field_string(L, "ca_file");
  o.proxy = opt_field_string(L, "proxy");

  h = lua_newuserdata(L, sizeof(*h));
  h->http = NULL;
  luaL_getmetatable(L, HTTP_MT);
  lua_setmetatable(L, -2);
  rc = wxp_http_new(&o, &h->http, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return 1;
}


static int http_close(lua_State *L)
{
  l_http *h = lua_touserdata(L, 1);

  if (h) {
    wxp_http_free(h->http);
    h->http = NULL;
  }
  return 0;
}


/* Pushes the response headers, names in lower case, repeats joined. */
static void push_headers(lua_State *L, const wxp_http_result *r)
{
  size_t i;
  char *p;

  lua_createtable(L, 0, (int)r->header_count);
  for (i = 0; i < r->header_count; i++) {
    for (p = r->headers[i].name; *p; p++) {
      if (*p >= 'A' && *p <= 'Z')
        *p = (char)(*p - 'A' + 'a');
    }
    lua_getfield(L, -1, r->headers[i].name);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushstring(L, r->headers[i].value);
    } else {
      lua_pushliteral(L, ", ");
      lua_pushstring(L, r->headers[i].value);
      lua_concat(L, 3);
    }
    lua_setfield(L, -2, r->headers[i].name);
  }
}


static void result_free(void *p)
{
  wxp_http_result_free(p);
  free(p);
}


/*
 * http:request(method, url, headers, body [, { fresh, timeout }])
 *   -> { status, headers, body } | nil, code, message, sent
 * headers is an array of "Name: value" strings; fresh sends the request
 * on a new connection, which libcurl never repeats (see wxp.h); timeout
 * (seconds) replaces the client's for this request.
 */
static int http_request(lua_State *L)
{
  wxp_http *http = check_http(L, 1);
  wxp_http_request req;
  int count;
  int i;
  const char **headers;
  lwxp_box *list;
  lwxp_box *box;
  wxp_http_result *r;
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  memset(&req, 0, sizeof(req));
  req.method = luaL_checkstring(L, 2);
  req.url = luaL_checkstring(L, 3);
  req.body = luaL_optlstring(L, 5, NULL, &req.body_len);
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_getfield(L, 6, "fresh");
    req.fresh = lua_toboolean(L, -1);
    lua_getfield(L, 6, "timeout");
    if (!lua_isnil(L, -1))
      req.timeout_ms = seconds_to_ms(L, luaL_checknumber(L, -1), "timeout");
    lua_pop(L, 2);
  }
  list = lwxp_newbox(L, LWXP_BOX_POINTER);
  box = lwxp_newbox(L, LWXP_BOX_POINTER);
  r = calloc(1, sizeof(*r));
  box->ptr = r;
  box->free_ptr = result_free;
  luaL_checktype(L, 4, LUA_TTABLE);
  count = (int)lua_rawlen(L, 4);
  headers = calloc((size_t)count + 1, sizeof(*headers));
  list->ptr = headers;
  list->free_ptr = free;
  if (!r || !headers)
    return luaL_error(L, "out of memory");
  for (i = 0; i < count; i++) {
    lua_rawgeti(L, 4, i + 1);
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 4,
                  "headers must be strings");
    headers[i] = lua_tostring(L, -1);
    lua_pop(L, 1);   /* still referenced by the table */
  }

  req.headers = headers;
  req.header_count = (size_t)count;
  rc = wxp_http_perform(http, &req, r, errbuf);
  if (rc == WXP_ENOMEM)
    return luaL_error(L, "out of memory");
  if (rc != WXP_OK) {
    lua_pushnil(L);
    lua_pushstring(L, net_codes[r->net_error]);
    lua_pushstring(L, errbuf);
    lua_pushboolean(L, r->request_sent);
    return 4;
  }

  lua_createtable(L, 0, 4);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  push_headers(L, r);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
  lua_setfield(L, -2, "body");
  lwxp_box_release(box);
  return 1;
}


static int http_tostring(lua_State *L)
{
  luaL_checkudata(L, 1, HTTP_MT);
  lua_pushliteral(L, HTTP_MT);
  return 1;
}

/* {====================================================================
 * Module functions
 * ===================================================================== */

static int l_nonce(lua_State *L)
{
  char nonce[33];
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc = wxp_nonce(nonce, errbuf);

  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  lua_pushstring(L, nonce);
  return 1;
}


/* utf8_check(text) -> true | nil, message, byte offset (1-based) */
static int l_utf8_check(lua_State *L)
{
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  size_t offset = 0;
  char errbuf[WXP_ERRBUF_SIZE] = "";

  if (wxp_utf8_check(text, len, &offset, errbuf) == WXP_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, errbuf);
  lua_pushinteger(L, (lua_Integer)offset + 1);
  return 3;
}


/* request_message(method, url, timestamp, nonce, body) -> text */
static int l_request_message(lua_State *L)
{
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  lua_Integer ts = luaL_checkinteger(L, 3);
  const char *nonce = luaL_checkstring(L, 4);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 5, "", &len);
  lwxp_box *box = lwxp_newbox(L, LWXP_BOX_BUF);

  if (wxp_request_message(method, url, ts, nonce, body, len, &box->buf)
      != WXP_OK)
    return luaL_error(L, "out of memory");
  return push_box(L, box);
}


/* response_message(timestamp, nonce, body) -> text */
static int l_response_message(lua_State *L)
{
  const char *ts = luaL_checkstring(L, 1);
  const char *nonce = luaL_checkstring(L, 2);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 3, "", &len);
  lwxp_box *box = lwxp_newbox(L, LWXP_BOX_BUF);

  if (wxp_response_message(ts, nonce, body, len, &box->buf) != WXP_OK)
    return luaL_error(L, "out of memory");
  return push_box(L, box);
}


/*
 * authorization(private_key, mchid, serial_no, method, url, body,
 * timestamp [, nonce]) -> header value | nil, message
 */
static int l_authorization(lua_State *L)
{
  l_key *k = check_private(L, 1);
  const char *mchid = luaL_checkstring(L, 2);
  const char *serial_no = luaL_checkstring(L, 3);
  const char *method = luaL_checkstring(L, 4);
  const char *url = luaL_checkstring(L, 5);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 6, "", &len);
  lua_Integer ts = luaL_checkinteger(L, 7);
  const char *nonce = luaL_optstring(L, 8, NULL);
  lwxp_box *box = lwxp_newbox(L, LWXP_BOX_BUF);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  rc = wxp_authorization(k->key, mchid, serial_no, method, url, body, len,
                         ts, nonce, &box->buf, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return push_box(L, box);
}


static int l_curl_version(lua_State *L)
{
  lua_pushstring(L, wxp_http_curl_version());
  return 1;
}


static int l_monotonic(lua_State *L)
{
  lua_pushnumber(L, wxp_monotonic());
  return 1;
}


/* sleep(seconds): blocks the thread; at most a day. */
static int l_sleep(lua_State *L)
{
  double seconds = luaL_checknumber(L, 1);

  luaL_argcheck(L, seconds >= 0 && seconds <= 86400, 1,
                "seconds must be between 0 and 86400");
  wxp_sleep(seconds);
  return 0;
}


static int l_system(lua_State *L)
{
  char name[128];

  wxp_http_system(name, sizeof(name));
  lua_pushstring(L, name);
  return 1;
}


static int l_generate_test_key(lua_State *L)
{
  int bits = (int)luaL_optinteger(L, 1, 2048);
  lwxp_box *box = lwxp_newbox(L, LWXP_BOX_SECRET);
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc = wxp_test_key_generate(bits, &box->buf, errbuf);

  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return push_box(L, box);
}


static const char *field_string(lua_State *L, const char *name, int needed)
{
  const char *s;

  lua_getfield(L, 1, name);
  if (!needed && lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  s = lua_tostring(L, -1);
  if (!s)
    luaL_error(L, "field %s must be a string", name);
  lua_pop(L, 1);    /* the table still references it */
  return s;
}


static lua_Integer field_integer(lua_State *L, const char *name)
{
  lua_Integer v;

  lua_getfield(L, 1, name);
  if (!lua_isnumber(L, -1))
    luaL_error(L, "field %s must be a number", name);
  v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}


/*
 * issue_test_certificate{ key, serial, common_name, not_before,
 * not_after [, issuer_key, issuer_certificate, ca, dns, ip] } -> PEM
 */
static int l_issue_test_certificate(lua_State *L)
{
  wxp_cert_request req;
  lwxp_box *box;
  char errbuf[WXP_ERRBUF_SIZE] = "";
  wxp_status rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&req, 0, sizeof(req));
  req.subject_key_pem = field_string(L, "key", 1);
  req.serial_hex = field_string(L, "serial", 1);
  req.common_name = field_string(L, "common_name", 1);
  req.not_before = field_integer(L, "not_before");
  req.not_after = field_integer(L, "not_after");
  req.issuer_key_pem = field_string(L, "issuer_key", 0);
  req.issuer_cert_pem = field_string(L, "issuer_certificate", 0);
  req.dns_name = field_string(L, "dns", 0);
  req.ip_address = field_string(L, "ip", 0);
  lua_getfield(L, 1, "ca");
  req.is_ca = lua_toboolean(L, -1);
  lua_pop(L, 1);

  box = lwxp_newbox(L, LWXP_BOX_BUF);
  rc = wxp_test_cert_issue(&req, &box->buf, errbuf);
  if (rc != WXP_OK)
    return push_failure(L, rc, errbuf);
  return push_box(L, box);
}

/* {====================================================================
 * Registration
 * ===================================================================== */

/* Creates a metatable with __index, __gc, __close and __tostring. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction closer, lua_CFunction tostring)
{
  luaL_newmetatable(L, name);
#if LUA_VERSION_NUM < 503
  /* Lua 5.3 and later set __name; key_tostring reads it. */
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
#endif
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushcfunction(L, closer);
  lua_setfield(L, -2, "close");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, closer);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, closer);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}


static const luaL_Reg private_methods[] = {
  { "sign", private_sign },
  { "decrypt", private_decrypt },
  { "bits", key_bits },
  { "matches", private_matches },
  { NULL, NULL }
};

static const luaL_Reg public_methods[] = {
  { "verify", public_verify },
  { "encrypt", public_encrypt },
  { "bits", key_bits },
  { NULL, NULL }
};

static const luaL_Reg cert_methods[] = {
  { "serial", cert_serial },
  { "not_before", cert_not_before },
  { "not_after", cert_not_after },
  { "public_key", cert_public_key },
  { NULL, NULL }
};

static const luaL_Reg aead_methods[] = {
  { "encrypt", aead_encrypt },
  { "decrypt", aead_decrypt },
  { "size", aead_size },
  { "parse_certificates", aead_parse_certificates },
  { NULL, NULL }
};

static const luaL_Reg store_methods[] = {
  { "put", store_put },
  { "remove", store_remove },
  { "expire", store_expire },
  { "find", store_find },
  { "newest", store_newest },
  { "list", store_list },
  { "count", store_count },
  { "verify", store_verify },
  { NULL, NULL }
};

static const luaL_Reg http_methods[] = {
  { "request", http_request },
  { NULL, NULL }
};

static const luaL_Reg module_functions[] = {
  { "load_private_key", l_load_private_key },
  { "load_public_key", l_load_public_key },
  { "load_certificate", l_load_certificate },
  { "new_aead_key", l_new_aead_key },
  { "new_store", l_new_store },
  { "new_http", l_new_http },
  { "nonce", l_nonce },
  { "utf8_check", l_utf8_check },
  { "request_message", l_request_message },
  { "response_message", l_response_message },
  { "authorization", l_authorization },
  { "curl_version", l_curl_version },
  { "system", l_system },
  { "monotonic", l_monotonic },
  { "sleep", l_sleep },
  { "generate_test_key", l_generate_test_key },
  { "issue_test_certificate", l_issue_test_certificate },
  { NULL, NULL }
};

int luaopen_wechatpay_core(lua_State *L);

int luaopen_wechatpay_core(lua_State *L)
{
  luaL_newmetatable(L, BOX_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  new_class(L, PRIVATE_KEY_MT, private_methods, key_close, key_tostring);
  new_class(L, PUBLIC_KEY_MT, public_methods, key_close, key_tostring);
  new_class(L, CERTIFICATE_MT, cert_methods, cert_close, cert_tostring);
  new_class(L, AEAD_KEY_MT, aead_methods, aead_close, aead_tostring);
  new_class(L, STORE_MT, store_methods, store_close, store_tostring);
  new_class(L, HTTP_MT, http_methods, http_close, http_tostring);

  luaL_newlib(L, module_functions);
  lwxp_open_json(L);
  lua_pushliteral(L, WXP_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}
