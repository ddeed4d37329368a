# figure rules: added with the figures stage
