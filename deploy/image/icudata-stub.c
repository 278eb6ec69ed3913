/*
 * An ICU common-data library that holds no data items, put in the image in place of Debian's
 * libicudata (31 MB). Why it is safe: idbridge links ICU only through libxml2, which calls ICU
 * for one thing, converting a document whose declared encoding it cannot decode itself, and it
 * asks glibc's iconv first (the image keeps glibc's gconv modules). UTF-8, UTF-16 and
 * ISO-8859-1 never reach either. With this stub an encoding only ICU knows is refused by
 * libxml2 as "Unsupported encoding" instead of being converted. deploy/README.md ("Size").
 *
 * The layout is ICU's "pointer TOC" common-data header (ucmndata.h) with a count of zero, the
 * same shape as ICU's own stubdata library. ICUDATA_ENTRY is the library's one symbol, named
 * after the ICU major version (icudt72_dat for ICU 72): rootfs-hook.sh reads it off the real
 * library. Built freestanding: it needs no libc.
 */
#include <stdint.h>

#ifndef ICUDATA_ENTRY
#error "define ICUDATA_ENTRY, e.g. -DICUDATA_ENTRY=icudt72_dat"
#endif

struct icu_data_info {
    uint16_t size;
    uint16_t reserved_word;
    uint8_t is_big_endian;
    uint8_t charset_family;
    uint8_t sizeof_uchar;
    uint8_t reserved_byte;
    uint8_t data_format[4];
    uint8_t format_version[4];
    uint8_t data_version[4];
};

struct icu_common_data {
    uint16_t header_size;
    uint8_t magic1;
    uint8_t magic2;
    struct icu_data_info info;
    char padding[8];
    uint32_t count;
    uint32_t reserved;
    uint32_t toc[4];
};

__attribute__((visibility("default"), aligned(16))) const struct icu_common_data ICUDATA_ENTRY = {
    .header_size = 32,
    .magic1 = 0xda,
    .magic2 = 0x27,
    .info = {
        .size = sizeof(struct icu_data_info),
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        .is_big_endian = 1,
#endif
        .charset_family = 0, /* ASCII */
        .sizeof_uchar = 2,
        .data_format = {'T', 'o', 'C', 'P'},
        .format_version = {1, 0, 0, 0},
    },
    .padding = {'n', 'o', ' ', 'd', 'a', 't', 'a'},
    .count = 0,
};
