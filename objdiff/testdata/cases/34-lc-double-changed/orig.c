/* case: a double constant 1.5 -> 2.5 loaded from an anonymous constant in .rodata.cst8 (SHF_MERGE, so gas keeps .LC0/.LC1 as NOTYPE LOCAL symbols and relocs name them: .LC0-4); bytes and relocs identical, the constant behind .LC0 differs -> scale changed; offset (.LC1 = 0.125, same section) unchanged. */
double scale(double x)
{
	return x * 1.5;
}

double offset(double x)
{
	return x + 0.125;
}
