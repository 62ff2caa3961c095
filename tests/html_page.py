"""A page read back with the standard library's HTML parser, as a small tree to search (tests only)."""

from html.parser import HTMLParser

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})


class Element:
    def __init__(self, tag, attrs, parent=None):
        self.tag = tag
        self.attrs = {name: ("" if value is None else value) for name, value in attrs}
        self.parent = parent
        self.children = []  # Elements and strings

    @property
    def text(self):
        """The text inside, whitespace runs made one space, as a reader sees it."""
        parts = []

        def walk(node):
            for child in node.children:
                if isinstance(child, str):
                    parts.append(child)
                elif child.tag not in ("script", "style"):
                    walk(child)

        walk(self)
        return " ".join("".join(parts).split())

    def iter(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def _matches(self, tag, class_, id, attrs):
        if tag is not None and self.tag != tag:
            return False
        if class_ is not None and class_ not in self.attrs.get("class", "").split():
            return False
        if id is not None and self.attrs.get("id") != id:
            return False
        return all(self.attrs.get(name) == value for name, value in (attrs or {}).items())

    def find_all(self, tag=None, class_=None, id=None, attrs=None):
        return [e for e in self.iter() if e._matches(tag, class_, id, attrs)]

    def find(self, tag=None, class_=None, id=None, attrs=None):
        found = self.find_all(tag, class_, id, attrs)
        return found[0] if found else None


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", [])
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, attrs, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is self.root:
            raise AssertionError(f"</{tag}> closes nothing that is open")
        self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_page(text):
    """The page as a tree; an end tag that closes nothing open is an error (a sign of broken markup)."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root
