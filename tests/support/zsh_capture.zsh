# Sourced by an interactive `zsh -f -i` on a pseudo-terminal (tests/test_completion.py): loads the
# completion system with $COMPDIR first on fpath, then, for one press of Tab, writes every match
# offered to the file $OUT, one a line, and exits.
PROMPT= RPROMPT=
fpath=($COMPDIR $fpath)
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
bindkey '^I' complete-word
compadd() {
    # a caller that asks for the matches itself (-O, -A, -D) is not offering them yet
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
        builtin compadd "$@"
        return
    fi
    local -a matches
    builtin compadd -A matches "$@"
    (( $#matches == 0 )) || print -rl -- $matches >>$OUT
    builtin compadd "$@"
}
comppostfuncs=(exit)
