#ifndef KILN_CMSGPACK_SHIM_H
#define KILN_CMSGPACK_SHIM_H

// msgpack-c's C API. `/usr/include/msgpack/` mixes C and C++ headers: include only the C entry.
#include <msgpack.h>

// Points a packer at an sbuffer. `msgpack_sbuffer_write` is a static inline function, which
// Swift cannot pass as a C function pointer itself.
static inline void kiln_msgpack_packer_init_sbuffer(msgpack_packer *packer, msgpack_sbuffer *buffer) {
    msgpack_packer_init(packer, buffer, msgpack_sbuffer_write);
}

#endif
