/* The one header of intel-ipsec-mb 1.3; it needs the fixed-width types first. */
#define NO_COMPAT_IMB_API_053 1 /* the compat macros rename struct fields (GCM, SHA1, ...) */
#include <stdint.h>
#include <stddef.h>
#include <intel-ipsec-mb.h>
