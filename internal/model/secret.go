package model

// MaxSecretNameLen caps a secret's name.
const MaxSecretNameLen = 128

// SecretNameRule says what a secret name is, for error messages.
const SecretNameRule = "use 1 to 128 letters, digits and '_', starting with a letter or '_', such as STRIPE_KEY"

// ValidSecretName reports whether s is a valid secret name: the shape of an
// environment variable name ([A-Za-z_][A-Za-z0-9_]*), at most
// MaxSecretNameLen bytes, so that a process function can receive it as one.
func ValidSecretName(s string) bool {
	if len(s) == 0 || len(s) > MaxSecretNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
