// Links every generated single-header translation unit together; running it proves the link.
int main() {
    return 0;
}
