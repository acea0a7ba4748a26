"""`python -m losses`: print the README's table of losses, made from the catalog."""
import losses

print(losses.markdown_table())
