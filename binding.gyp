{
  "targets": [
    {
      "target_name": "mtls_relay",
      "sources": ["native/binding.cc", "native/context.cc", "native/loop.cc", "native/connection.cc", "native/answers.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "defines": ["NAPI_VERSION=8", "OPENSSL_API_COMPAT=30000", "OPENSSL_NO_DEPRECATED"]
    }
  ]
}
