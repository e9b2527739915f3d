#ifndef CALC_H
#define CALC_H
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define NAME(n) CAT(SIDE, n)

int app_answer(int x);
int app_scaled(int x);
void app_setbase(int b);
void app_settls(int v);
int app_gettls(void);
long app_ncalls(void);

int lib_answer(int x);
int lib_scaled(int x);
void lib_setbase(int b);
void lib_settls(int v);
int lib_gettls(void);
long lib_ncalls(void);
#endif
