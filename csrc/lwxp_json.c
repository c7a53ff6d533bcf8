/*
 * lwxp_json.c - JSON between Lua values and text, through cJSON.
 * SPDX-License-Identifier: MIT
 *
 * Encoding: integers are written exactly, floats with an integral value
 * as integers, other floats with up to 17 digits; strings must be UTF-8
 * that the platform accepts (no 4-byte characters) and free of NUL bytes,
 * because cJSON keeps strings NUL-terminated.  Object keys are written in
 * byte order, so the same table always gives the same bytes.  A table
 * whose keys are 1..n is an array; an empty table is an object; the
 * sentinels null and empty_array stand for JSON null and [].  A table
 * with the metatable array_mt is always an array, even when empty.
 *
 * Decoding: integers that fit in 64 bits are exact Lua integers (see
 * wxp_json.c), null is the null sentinel, and arrays get array_mt, so
 * that [] and {} stay apart and decoded values encode back the same.
 *
 * Built for LuaJIT (Lua 5.1 API), where every number is a double, both
 * directions reject a number beyond 2^53 - 1 in magnitude instead of
 * rounding it: such a double may already stand for another integer
 * (2^53 + 1 reads as 2^53).
 */
#include "lwxp.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define MAX_DEPTH 64
#define PATH_SIZE 160
#define ARRAY_MT "wechatpay.json_array"

/* 2^53 - 1: a double represents every integer up to this magnitude. */
#define MAX_SAFE_INTEGER 9007199254740991.0

static char null_tag;
static char empty_array_tag;

void lwxp_push_null(lua_State *L)
{
  lua_pushlightuserdata(L, &null_tag);
}


void lwxp_push_empty_array(lua_State *L)
{
  lua_pushlightuserdata(L, &empty_array_tag);
}

/* {====================================================================
 * Encoding
 * ===================================================================== */

/* Where the encoder is, for messages such as "data[2].name: ...". */
typedef struct encoder {
  lua_State *L;
  char path[PATH_SIZE];
  char error[WXP_ERRBUF_SIZE];
} encoder;

/*
 * Each encode_* function adds its value to parent (under key, or at the
 * end of an array when key is NULL) before it fills it in, so the whole
 * tree is reachable from the boxed root if Lua raises midway.
 */
static int encode_value(encoder *e, int index, int depth, cJSON *parent,
                        const char *key);

static int encode_fail(encoder *e, const char *what)
{
  snprintf(e->error, sizeof(e->error), "%s: %.300s",
           e->path[0] ? e->path : "value", what);
  return 0;
}


static int attach(encoder *e, cJSON *parent, const char *key, cJSON *item)
{
  if (!item)
    return encode_fail(e, "out of memory");
  if (key)
    cJSON_AddItemToObject(parent, key, item);
  else
    cJSON_AddItemToArray(parent, item);
  return 1;
}


/* Appends ".key" or "[n]" to the path; returns the old length. */
static size_t path_push(encoder *e, const char *key, lua_Integer n)
{
  size_t old = strlen(e->path);

  if (key)
    snprintf(e->path + old, PATH_SIZE - old, "%s%.40s", old ? "." : "",
             key);
  else
    snprintf(e->path + old, PATH_SIZE - old, "[%lld]", (long long)n);
  return old;
}


/*
 * Writes a float that is not an integer with 15 significant digits, or 17
 * when 15 do not read back as the same double.  cJSON's own printer is not
 * used, because its read-back check allows an error of one epsilon: cJSON
 * 1.7.15 prints 0.1 + 0.2 as 0.3 and 2^53 as 9.00719925474099e+15.
 */
static void format_float(char *text, size_t size, double f)
{
  char point = localeconv()->decimal_point[0];
  char *p;

  snprintf(text, size, "%.15g", f);
  if (strtod(text, NULL) != f)
    snprintf(text, size, "%.17g", f);
  /* JSON needs a '.', whatever the C locale's decimal point is. */
  if (point != '.' && point != '\0') {
    p = strchr(text, point);
    if (p)
      *p = '.';
  }
}


static cJSON *number_item(encoder *e, int index)
{
  char text[40];
  lua_Number f;

#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(e->L, index)) {
    snprintf(text, sizeof(text), LUA_INTEGER_FMT,
             lua_tointeger(e->L, index));
    return cJSON_CreateRaw(text);
  }
#endif
  f = lua_tonumber(e->L, index);
  /* Integral values below 2^63 print exactly, as integers. */
  if (f == floor(f) && fabs(f) < 9223372036854775808.0)
    snprintf(text, sizeof(text), "%.0f", (double)f);
  else
    format_float(text, sizeof(text), (double)f);
  return cJSON_CreateRaw(text);
}


static int encode_number(encoder *e, int index, cJSON *parent,
                         const char *key)
{
  lua_Number f = lua_tonumber(e->L, index);

  if (isnan(f) || isinf(f))
    return encode_fail(e, "NaN and infinity have no JSON form");
#if LUA_VERSION_NUM < 503
  if (fabs(f) > MAX_SAFE_INTEGER) {
    char number[40];
    char what[160];

    format_float(number, sizeof(number), (double)f);
    snprintf(what, sizeof(what), "number %s is outside -(2^53 - 1) to "
             "2^53 - 1, the integers a LuaJIT number holds exactly", number);
    return encode_fail(e, what);
  }
#endif
  return attach(e, parent, key, number_item(e, index));
}


static int encode_string(encoder *e, int index, cJSON *parent,
                         const char *key)
{
  size_t len;
  const char *s = lua_tolstring(e->L, index, &len);
  char why[WXP_ERRBUF_SIZE];

  if (memchr(s, '\0', len))
    return encode_fail(e, "string contains a NUL byte");
  if (wxp_utf8_check(s, len, NULL, why) != WXP_OK)
    return encode_fail(e, why);
  return attach(e, parent, key, cJSON_CreateString(s));
}


/* Returns the length n when the table's keys are exactly 1..n, else -1. */
static lua_Integer array_length(lua_State *L, int index)
{
  lua_Integer count = 0;
  lua_Integer max = 0;
  lua_Number k;
  int is_index;

  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    is_index = k >= 1 && k <= (lua_Number)INT32_MAX && k == floor(k);
    if (!is_index) {
      lua_pop(L, 1);
      return -1;
    }
    if ((lua_Integer)k > max)
      max = (lua_Integer)k;
    count++;
  }
  return count == max ? count : -1;
}


static int encode_array(encoder *e, int index, lua_Integer n, int depth,
                        cJSON *array)
{
  lua_Integer i;
  size_t old;
  int ok = 1;

  for (i = 1; ok && i <= n; i++) {
    old = path_push(e, NULL, i);
    lua_rawgeti(e->L, index, i);
    ok = encode_value(e, lua_gettop(e->L), depth + 1, array, NULL);
    lua_pop(e->L, 1);
    if (ok)
      e->path[old] = '\0';
  }
  return ok;
}


typedef struct key_ref {
  const char *s;
  size_t len;
} key_ref;


static int compare_keys(const void *a, const void *b)
{
  const key_ref *x = a;
  const key_ref *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);

  if (c != 0)
    return c;
  return (x->len > y->len) - (x->len < y->len);
}


/*
 * Collects the string keys of the table, sorted, into an array owned by a
 * box left on the stack.  The strings stay valid because the table does.
 */
static key_ref *sorted_keys(encoder *e, int index, size_t *count)
{
  lua_State *L = e->L;
  lwxp_box *box;
  key_ref *keys;
  size_t n = 0;

  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      encode_fail(e, "table mixes array items and string keys, or "
                  "has keys that are neither");
      return NULL;
    }
    n++;
  }

  box = lwxp_newbox(L, LWXP_BOX_POINTER);
  keys = malloc((n ? n : 1) * sizeof(*keys));
  box->ptr = keys;
  box->free_ptr = free;
  if (!keys) {
    encode_fail(e, "out of memory");
    return NULL;
  }

  *count = 0;
  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    keys[*count].s = lua_tolstring(L, -1, &keys[*count].len);
    (*count)++;
  }
  qsort(keys, *count, sizeof(*keys), compare_keys);
  return keys;
}


static int encode_object(encoder *e, int index, int depth, cJSON *object)
{
  lua_State *L = e->L;
  size_t count = 0;
  size_t i;
  size_t old;
  key_ref *keys = sorted_keys(e, index, &count);
  int ok = keys != NULL;

  for (i = 0; ok && i < count; i++) {
    if (memchr(keys[i].s, '\0', keys[i].len)
        || wxp_utf8_check(keys[i].s, keys[i].len, NULL, NULL) != WXP_OK)
      return encode_fail(e, "object key is not valid UTF-8 text");
    old = path_push(e, keys[i].s, 0);
    lua_pushlstring(L, keys[i].s, keys[i].len);
    lua_rawget(L, index);
    ok = encode_value(e, lua_gettop(L), depth + 1, object, keys[i].s);
    lua_pop(L, 1);
    if (ok)
      e->path[old] = '\0';
  }
  return ok;
}


static int encode_table(encoder *e, int index, int depth, cJSON *parent,
                        const char *key)
{
  lua_State *L = e->L;
  int top = lua_gettop(L);
  lua_Integer n;
  cJSON *container;
  int ok;

  if (depth > MAX_DEPTH)
    return encode_fail(e, "tables nested too deep (or a cycle)");

  n = array_length(L, index);
  if (n == 0 && lua_getmetatable(L, index)) {
    luaL_getmetatable(L, ARRAY_MT);
    if (lua_rawequal(L, -1, -2))
      n = -2;                /* an empty array */
    lua_pop(L, 2);
  }
  container = n > 0 || n == -2 ? cJSON_CreateArray() : cJSON_CreateObject();
  if (!attach(e, parent, key, container))
    return 0;
  if (n > 0)
    ok = encode_array(e, index, n, depth, container);
  else if (n == -2)
    ok = 1;
  else
    ok = encode_object(e, index, depth, container);

  lua_settop(L, top);
  return ok;
}


static int encode_value(encoder *e, int index, int depth, cJSON *parent,
                        const char *key)
{
  lua_State *L = e->L;
  void *p;

  switch (lua_type(L, index)) {
  case LUA_TBOOLEAN:
    return attach(e, parent, key, cJSON_CreateBool(lua_toboolean(L, index)));
  case LUA_TNUMBER:
    return encode_number(e, index, parent, key);
  case LUA_TSTRING:
    return encode_string(e, index, parent, key);
  case LUA_TTABLE:
    return encode_table(e, index, depth, parent, key);
  case LUA_TLIGHTUSERDATA:
    p = lua_touserdata(L, index);
    if (p == &null_tag)
      return attach(e, parent, key, cJSON_CreateNull());
    if (p == &empty_array_tag)
      return attach(e, parent, key, cJSON_CreateArray());
    break;
  default:
    break;
  }
  lua_pushfstring(L, "cannot encode a %s as JSON", luaL_typename(L, index));
  return encode_fail(e, lua_tostring(L, -1));
}


/* encode(value) -> text | nil, message */
static int l_json_encode(lua_State *L)
{
  encoder e;
  lwxp_box *tree;
  cJSON *root;
  char *text;

  luaL_checkany(L, 1);
  lua_settop(L, 1);
  luaL_checkstack(L, 4 * MAX_DEPTH + 16, "JSON encoding");
  memset(&e, 0, sizeof(e));
  e.L = L;

  /* The value is built inside a one-element array, then printed alone. */
  tree = lwxp_newbox(L, LWXP_BOX_POINTER);
  tree->free_ptr = (void (*)(void *))cJSON_Delete;
  tree->ptr = cJSON_CreateArray();
  if (!tree->ptr)
    return luaL_error(L, "out of memory encoding JSON");
  if (!encode_value(&e, 1, 0, tree->ptr, NULL)) {
    lua_pushnil(L);
    lua_pushstring(L, e.error);
    return 2;
  }

  root = cJSON_GetArrayItem(tree->ptr, 0);
  text = cJSON_PrintUnformatted(root);
  lwxp_box_release(tree);
  if (!text)
    return luaL_error(L, "out of memory encoding JSON");
  tree->ptr = text;
  tree->free_ptr = free;
  lua_pushstring(L, text);
  lwxp_box_release(tree);
  return 1;
}

/* {====================================================================
 * Decoding
 * ===================================================================== */

typedef struct decoder {
  lua_State *L;
  wxp_json_numbers numbers;
  char error[WXP_ERRBUF_SIZE];   /* set when decoding stops */
} decoder;

#if LUA_VERSION_NUM < 503
/*
 * Rejects an integer token that a double cannot hold exactly; returns 0
 * and sets d->error, naming the token, its byte and its object key.
 */
static int reject_unsafe_integer(decoder *d, const cJSON *item,
                                 const char *token, size_t len)
{
  snprintf(d->error, sizeof(d->error), "integer %.*s%s at byte %d%s%.60s"
           "%s is outside -(2^53 - 1) to 2^53 - 1, the integers a LuaJIT "
           "number holds exactly", (int)(len > 40 ? 40 : len), token,
           len > 40 ? "..." : "",
           (int)(token - d->numbers.text) + 1,
           item->string ? " (key \"" : "", item->string ? item->string : "",
           item->string ? "\")" : "");
  return 0;
}
#endif


/* Pushes a number; returns 0 (with d->error set) when it is rejected. */
static int push_number(decoder *d, const cJSON *item)
{
  const char *token;
  size_t len;
  char text[32];
  char *end;
  long long v;

  /*
   * Each search stops at len: strcspn would run on to the end of the
   * text for every number, so decoding took time quadratic in its size.
   */
  if (!wxp_json_next_number(&d->numbers, &token, &len)
      || memchr(token, '.', len) || memchr(token, 'e', len)
      || memchr(token, 'E', len)) {
    lua_pushnumber(d->L, item->valuedouble);
    return 1;
  }
  if (len >= sizeof(text)) {
#if LUA_VERSION_NUM < 503
    return reject_unsafe_integer(d, item, token, len);
#else
    lua_pushnumber(d->L, item->valuedouble);
    return 1;
#endif
  }
  memcpy(text, token, len);
  text[len] = '\0';
  errno = 0;
  v = strtoll(text, &end, 10);
#if LUA_VERSION_NUM >= 503
  if (errno != 0 || *end != '\0')
    lua_pushnumber(d->L, item->valuedouble);
  else
    lua_pushinteger(d->L, (lua_Integer)v);
#else
  if (errno != 0 || *end != '\0' || v > (long long)MAX_SAFE_INTEGER
      || v < -(long long)MAX_SAFE_INTEGER)
    return reject_unsafe_integer(d, item, token, len);
  lua_pushnumber(d->L, (lua_Number)v);
#endif
  return 1;
}


/* Pushes a value; returns 0 (with d->error set) when it is rejected. */
static int push_value(decoder *d, const cJSON *item)
{
  lua_State *L = d->L;
  const cJSON *child;
  int i = 1;

  luaL_checkstack(L, 4, "JSON decoding");
  if (cJSON_IsNull(item)) {
    lwxp_push_null(L);
  } else if (cJSON_IsBool(item)) {
    lua_pushboolean(L, cJSON_IsTrue(item));
  } else if (cJSON_IsNumber(item)) {
    return push_number(d, item);
  } else if (cJSON_IsString(item)) {
    lua_pushstring(L, item->valuestring);
  } else if (cJSON_IsArray(item)) {
    lua_newtable(L);
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, -2);
    cJSON_ArrayForEach(child, item) {
      if (!push_value(d, child))
        return 0;
      lua_rawseti(L, -2, i++);
    }
  } else {
    lua_newtable(L);
    cJSON_ArrayForEach(child, item) {
      if (!push_value(d, child))
        return 0;
      lua_setfield(L, -2, child->string);
    }
  }
  return 1;
}


/* decode(text) -> value | nil, message */
static int l_json_decode(lua_State *L)
{
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  size_t at = 0;
  lwxp_box *tree = lwxp_newbox(L, LWXP_BOX_POINTER);
  decoder d;

  tree->free_ptr = (void (*)(void *))cJSON_Delete;
  tree->ptr = wxp_json_parse(text, len, &at);
  if (!tree->ptr) {
    lua_pushnil(L);
    if (len == 0)
      lua_pushliteral(L, "invalid JSON: empty text");
    else
      lua_pushfstring(L, "invalid JSON near byte %d", (int)at + 1);
    return 2;
  }

  d.L = L;
  d.numbers.text = text;
  d.numbers.len = len;
  d.numbers.pos = 0;
  d.error[0] = '\0';
  if (!push_value(&d, tree->ptr)) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON: %s", d.error);
    return 2;
  }
  return 1;
}


void lwxp_open_json(lua_State *L)
{
  lua_pushcfunction(L, l_json_encode);
  lua_setfield(L, -2, "json_encode");
  lua_pushcfunction(L, l_json_decode);
  lua_setfield(L, -2, "json_decode");
  lwxp_push_null(L);
  lua_setfield(L, -2, "null");
  lwxp_push_empty_array(L);
  lua_setfield(L, -2, "empty_array");
  luaL_newmetatable(L, ARRAY_MT);
  lua_setfield(L, -2, "array_mt");
}
