#!/usr/bin/env bash
# Regenerates crates/policy/src/syscall_table.rs from the kernel UAPI header.
# Calls newer than the Debian 12 header are listed by hand below.
set -euo pipefail
hdr=/usr/include/x86_64-linux-gnu/asm/unistd_64.h
out="$(dirname "$0")/../crates/policy/src/syscall_table.rs"
{
  echo "//! x86_64 system call numbers by name, generated from the kernel UAPI header"
  echo "//! \`asm/unistd_64.h\` plus the calls added up to Linux 6.16. Sorted by name."
  echo "//! Regenerate with \`scripts/gen-syscalls.sh\` when a kernel adds calls."
  echo ""
  echo "/// (name, number) pairs, sorted by name so lookups can binary-search."
  echo "pub const SYSCALLS_X86_64: &[(&str, u32)] = &["
  ( grep '#define __NR_' "$hdr" | awk '{sub("__NR_","",$2); print $2, $3}'
    printf "%s\n" "cachestat 451" "fchmodat2 452" "map_shadow_stack 453" "futex_wake 454" \
      "futex_wait 455" "futex_requeue 456" "statmount 457" "listmount 458" "lsm_get_self_attr 459" \
      "lsm_set_self_attr 460" "lsm_list_modules 461" "mseal 462" "setxattrat 463" "getxattrat 464" \
      "listxattrat 465" "removexattrat 466" "open_tree_attr 467" "file_getattr 468" "file_setattr 469"
  ) | LC_ALL=C sort -u -k1,1 | awk '{printf "    (\"%s\", %s),\n", $1, $2}'
  echo "];"
} > "$out"
