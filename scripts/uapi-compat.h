// Kernel definitions the probes need where the installed headers predate them (Linux 6.7+ ABI):
// userfaultfd's async write-protect features and PAGEMAP_SCAN. Include after <linux/userfaultfd.h>
// and <linux/fs.h>.
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1<<15)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1<<13)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1<<12)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef PAGEMAP_SCAN
struct page_region { unsigned long long start, end, categories; };
struct pm_scan_arg { unsigned long long size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask, category_anyof_mask, return_mask; };
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1<<0)
#define PM_SCAN_CHECK_WPASYNC (1<<1)
#define PAGE_IS_WRITTEN (1<<1)
#define PAGE_IS_HUGE (1<<6)
#endif
