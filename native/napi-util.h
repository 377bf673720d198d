// Small N-API helpers shared by the addon's bindings (binding.cc: the relay; answers.cc: the OCSP answer server).
#pragma once

#include <node_api.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mtls_relay {

#define NAPI(call)                                                        \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error(env, "MTLS_NATIVE", "native relay: " #call " failed"); \
      return nullptr;                                                     \
    }                                                                     \
  } while (0)

inline napi_value throwError(napi_env env, const std::string& msg) {
  napi_throw_error(env, "MTLS_NATIVE", msg.c_str());
  return nullptr;
}

inline void setStr(napi_env env, napi_value obj, const char* key, const std::string& v) {
  napi_value s;
  napi_create_string_utf8(env, v.data(), v.size(), &s);
  napi_set_named_property(env, obj, key, s);
}
inline void setNum(napi_env env, napi_value obj, const char* key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

inline bool getArgs(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) {
    napi_throw_type_error(env, nullptr, "native relay: missing arguments");
    return false;
  }
  return true;
}

inline bool getString(napi_env env, napi_value v, std::string& out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) {
    out.clear();
    return true;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) return false;
  out.resize(len);
  size_t got = 0;
  napi_get_value_string_utf8(env, v, out.data(), len + 1, &got);
  out.resize(got);
  return true;
}

inline bool getBytes(napi_env env, napi_value v, std::vector<uint8_t>& out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) return true;
  void* p;
  size_t len;
  if (napi_get_buffer_info(env, v, &p, &len) != napi_ok) return false;
  out.assign(static_cast<uint8_t*>(p), static_cast<uint8_t*>(p) + len);
  return true;
}

inline uint32_t getU32(napi_env env, napi_value v) {
  uint32_t n = 0;
  napi_get_value_uint32(env, v, &n);
  return n;
}

// The lifetime of an object JavaScript holds as an external (the relay's Engine, the OCSP answer Server): T has
// `env` and `shutdown()`, which stops its threads and is safe to call twice.
// The environment goes away (process exit, or a worker thread ending without destroy()): stop the threads before
// the thread-safe function they call is gone.
template <class T>
void cleanupHookOf(void* p) {
  auto* o = static_cast<T*>(p);
  o->env = nullptr;
  o->shutdown();
}

// The JavaScript object was collected: free everything (threads stopped first).
template <class T>
void finalizeOf(napi_env env, void* p, void*) {
  auto* o = static_cast<T*>(p);
  if (o->env) napi_remove_env_cleanup_hook(env, cleanupHookOf<T>, o);
  delete o;
}

// The arguments of a call whose first argument is a T external; null (with a JS exception pending) when wrong.
template <class T>
T* externalCall(napi_env env, napi_callback_info info, size_t want, napi_value* argv, const char* notOne) {
  if (!getArgs(env, info, want, argv)) return nullptr;
  void* p = nullptr;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    napi_throw_type_error(env, nullptr, notOne);
    return nullptr;
  }
  return static_cast<T*>(p);
}

}  // namespace mtls_relay
