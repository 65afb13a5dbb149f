"""sdui.assets: data shipped with sdui (architecture config folders, CLIP tokenizer); see sdui/assets_path.py."""
