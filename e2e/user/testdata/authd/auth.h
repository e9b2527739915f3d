/* libauth: password checks for authd. */
int auth_check(const char *user, const char *pw);
int auth_attempts(void);
