// The fp32 FMA peak of one core (AVX-512 hosts): 12 independent 16-wide FMA chains. gcc -O2 -march=native bench/cpu/fma-peak.c -o /tmp/fma && /tmp/fma
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  __m512 a[12]; __m512 b=_mm512_set1_ps(1.0000001f), c=_mm512_set1_ps(1e-7f);
  for(int i=0;i<12;i++) a[i]=_mm512_set1_ps((float)i);
  long N=200000000/12; double best=0;
  for(int r=0;r<5;r++){
    double t=now();
    for(long n=0;n<N;n++){
#pragma GCC unroll 12
      for(int i=0;i<12;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
    }
    t=now()-t; double gf=N*12.0*16*2/t/1e9; if(gf>best)best=gf;
  }
  float s=0; for(int i=0;i<12;i++) s+=_mm512_reduce_add_ps(a[i]);
  printf("peak fp32 FMA, 1 thread: %.1f GFLOP/s (sink %g)\n",best,s);
}
