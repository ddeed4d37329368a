# analysis rules: added with the analysis stage
