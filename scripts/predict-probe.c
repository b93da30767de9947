// Write-prediction probe for docs/design.md ("Predicted pages"): after a collection's scan
// re-protected written pages, does UFFDIO_WRITEPROTECT(mode 0) alone leave them writable without a
// fault, or is MADV_POPULATE_WRITE needed? Per kind of memory the backends track.
// gcc -O2 scripts/predict-probe.c -o /tmp/predict-probe && /tmp/predict-probe   (Linux 6.7+, root or
// userfaultfd allowed). Prints minor faults taken by the application's writes and the cost of
// each step, per page.
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
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <linux/fs.h>
#include "uapi-compat.h"
static int uffd, pm; static const long P = 4096; enum { N = 2048 };
static struct page_region vec[N];
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
static long minflt(void){struct rusage u;getrusage(RUSAGE_SELF,&u);return u.ru_minflt;}
static void wp(char*a,size_t l,int on){struct uffdio_writeprotect w={.range={(unsigned long)a,l},.mode=on?UFFDIO_WRITEPROTECT_MODE_WP:0};while(ioctl(uffd,UFFDIO_WRITEPROTECT,&w)){if(errno!=EAGAIN){perror("wp");exit(1);}}}
static long scan(char*a,size_t l,int reset){struct pm_scan_arg s={sizeof s,(reset?PM_SCAN_WP_MATCHING:0)|PM_SCAN_CHECK_WPASYNC,(unsigned long)a,(unsigned long)a+l,0,(unsigned long)vec,N,0,0,PAGE_IS_WRITTEN,0,PAGE_IS_WRITTEN};long n=ioctl(pm,PAGEMAP_SCAN,&s);if(n<0){perror("scan");exit(1);}long p=0;for(int i=0;i<n;i++)p+=(vec[i].end-vec[i].start)/P;return p;}
static void touch(char*m,int v){for(long i=0;i<N;i++)m[i*P+8]=v;}
static char*mk(int kind){char*m;if(kind==0)m=mmap(0,N*P,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);else if(kind==1)m=mmap(0,N*P,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);else{int fd=memfd_create("p",MFD_CLOEXEC);if(ftruncate(fd,N*P))exit(1);m=mmap(0,N*P,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0);close(fd);}
 madvise(m,N*P,MADV_NOHUGEPAGE);return m;}
static void reg(char*m){struct uffdio_register r={.range={(unsigned long)m,N*P},.mode=UFFDIO_REGISTER_MODE_WP};if(ioctl(uffd,UFFDIO_REGISTER,&r)){perror("reg");exit(1);}wp(m,N*P,1);}
int main(void){
 uffd=syscall(SYS_userfaultfd,O_CLOEXEC|O_NONBLOCK|1);
 struct uffdio_api api={UFFD_API,UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED|UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
 if(ioctl(uffd,UFFDIO_API,&api)){perror("api");return 1;}
 pm=open("/proc/self/pagemap",O_RDONLY);
 const char*names[]={"private anonymous (lavapipe's mapping, async-wp)","shared anonymous (host-import arena)","memfd MAP_SHARED (shadow-wp shadow)"};
 static char snap[N*4096];
 for(int kind=0;kind<3;kind++){
  printf("%s, %d pages:\n",names[kind],N);
  for(int pre=0;pre<3;pre++){ // how the pages were last touched before the collection
   const char*pn[]={"written then re-protected","populated by reads only, protected","never touched (WP_UNPOPULATED marker)"};
   for(int pop=0;pop<2;pop++){
    char*m=mk(kind);
    if(pre==0){touch(m,1);} else if(pre==1){volatile char s=0;for(long i=0;i<N;i++)s+=m[i*P];(void)s;}
    reg(m);
    if(pre==0){touch(m,2);} // written since registration: the collection's scan re-protects them
    long w=scan(m,N*P,1); (void)w;
    double t0=now(); memcpy(snap,m,N*P); double tcopy=now()-t0;
    t0=now(); long chk=scan(m,N*P,0); double tchk=now()-t0;
    t0=now(); wp(m,N*P,0); double tun=now()-t0;
    double tpop=0; if(pop){t0=now();if(madvise(m,N*P,MADV_POPULATE_WRITE))perror("populate");tpop=now()-t0;}
    long f0=minflt(); t0=now(); touch(m,3); double tw=now()-t0; long f=minflt()-f0;
    t0=now(); long diff=0; for(long i=0;i<N;i++) diff+=memcmp(snap+i*P,m+i*P,P)!=0; double tcmp=now()-t0;
    long rescan=scan(m,N*P,1);
    printf("  %-38s %-22s faults/page %.2f  write %.3f us/page  unprotect %.3f  populate %.3f  copy %.3f  check-scan %.3f (%ld)  compare %.3f (%ld differ)  next scan %ld pages\n",
      pn[pre],pop?"unprotect+POPULATE:":"unprotect only:",(double)f/N,tw/1e3/N,tun/1e3/N,tpop/1e3/N,tcopy/1e3/N,tchk/1e3/N,chk,tcmp/1e3/N,diff,rescan);
    munmap(m,N*P);
   }
  }
 }
 // Reference: a plain async-WP fault per page (re-protected written page).
 for(int kind=0;kind<3;kind++){char*m=mk(kind);touch(m,1);reg(m);long f0=minflt();double t0=now();touch(m,2);double t=now()-t0;long f=minflt()-f0;
  printf("trap reference, %s: faults/page %.2f, %.3f us/page\n",names[kind],(double)f/N,t/1e3/N);munmap(m,N*P);}
 return 0;}
