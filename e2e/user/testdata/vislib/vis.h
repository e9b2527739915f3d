const char *vis_name(int i);
int vis_tail(int i);
int vis_count(void);
