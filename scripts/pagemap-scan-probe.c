// PAGEMAP_SCAN probe for docs/design.md ("What PAGEMAP_SCAN does with gaps", "How the scan grows"):
// gcc -O2 scripts/pagemap-scan-probe.c -o /tmp/probe && /tmp/probe   (Linux 6.7+, userfaultfd allowed)
// Results: n = number of runs, or -errno (-1: EPERM).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <linux/fs.h>
#include "uapi-compat.h"
static int uffd, pm; static long P=4096;
static void reg(char*a,size_t l){struct uffdio_register r={.range={(unsigned long)a,l},.mode=UFFDIO_REGISTER_MODE_WP};if(ioctl(uffd,UFFDIO_REGISTER,&r))perror("reg");struct uffdio_writeprotect w={.range={(unsigned long)a,l},.mode=UFFDIO_WRITEPROTECT_MODE_WP};if(ioctl(uffd,UFFDIO_WRITEPROTECT,&w))perror("wp");}
static struct page_region vec[4096];
static long scan(char*a,size_t l,unsigned long flags,unsigned long ret,long*pages){struct pm_scan_arg s={sizeof s,flags,(unsigned long)a,(unsigned long)a+l,0,(unsigned long)vec,4096,0,0,PAGE_IS_WRITTEN,0,ret};long n=ioctl(pm,PAGEMAP_SCAN,&s);if(n<0)return -errno;*pages=0;for(int i=0;i<n;i++)*pages+=(vec[i].end-vec[i].start)/P;return n;}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
int main(){
 uffd=syscall(SYS_userfaultfd,O_CLOEXEC|O_NONBLOCK|1);struct uffdio_api api={UFFD_API,UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED};if(ioctl(uffd,UFFDIO_API,&api))perror("api");
 pm=open("/proc/self/pagemap",O_RDONLY);long pages;
 // layout: A(16 pages reg) | G(16 pages unregistered anon, populated) | B(16 reg) | hole(16 unmapped) | C(16 reg)
 char*base=mmap(0,80*P,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
 madvise(base,80*P,MADV_NOHUGEPAGE);
 memset(base,1,80*P);
 munmap(base+48*P,16*P);
 reg(base,16*P);reg(base+32*P,16*P);reg(base+64*P,16*P);
 base[P]=2;base[20*P]=2;base[33*P]=2;base[65*P]=2;
 long n;
 n=scan(base,80*P,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,PAGE_IS_WRITTEN,&pages);printf("whole range with unregistered VMA gap + hole, CHECK_WPASYNC: n=%ld pages=%ld\n",n,pages);
 n=scan(base,80*P,PM_SCAN_WP_MATCHING,PAGE_IS_WRITTEN,&pages);printf("same without CHECK_WPASYNC: n=%ld pages=%ld\n",n,pages);
 for(int i=0;i<n;i++)printf("  run %ld..%ld\n",(long)((vec[i].start-(unsigned long)base)/P),(long)((vec[i].end-(unsigned long)base)/P));
 base[P]=3;base[65*P]=3;
 n=scan(base+32*P,48*P,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,PAGE_IS_WRITTEN,&pages);printf("B..C across a hole only, CHECK_WPASYNC: n=%ld pages=%ld\n",n,pages);
 n=scan(base,48*P,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,PAGE_IS_WRITTEN,&pages);printf("A..B (gap VMA) CHECK_WPASYNC after a new write in A: n=%ld\n",n);
 n=scan(base,16*P,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,PAGE_IS_WRITTEN,&pages);printf("A alone: n=%ld pages=%ld\n",n,pages);
 // cost per PTE: big populated registered region
 for(size_t mb=16;mb<=1024;mb*=4){size_t L=mb<<20;char*m=mmap(0,L,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);madvise(m,L,MADV_NOHUGEPAGE);
  double t0=now();reg(m,L);double treg=now()-t0;
  for(int pop=0;pop<2;pop++){ if(pop){memset(m,1,L);scan(m,L,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,PAGE_IS_WRITTEN,&pages);}
  for(int rm=0;rm<2;rm++){unsigned long ret=rm?PAGE_IS_WRITTEN|PAGE_IS_HUGE:PAGE_IS_WRITTEN;double best=1e18;
   for(int k=0;k<7;k++){for(int w=0;w<4;w++)m[(size_t)w*997*P%L]=5;double t=now();scan(m,L,PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC,ret,&pages);t=now()-t;if(t<best)best=t;}
   printf("%4zu MiB %s return_mask=%s: scan %.1f us (%.2f ns/page)%s\n",mb,pop?"populated  ":"unpopulated",rm?"WRITTEN|HUGE":"WRITTEN     ",best/1e3,best/(L/P),"");}}
  printf("   register+protect %.1f us\n",treg/1e3);
  munmap(m,L);}
 return 0;}
