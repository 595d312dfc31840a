# Turns the file IN into a C source OUT defining SYM (bytes + NUL) and SYM_len.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* generated from ${IN} */\nconst char ${SYM}[] = {${bytes} 0x00};\n"
     "const unsigned long ${SYM}_len = ${len};\n")
