"The library's layering: no import circle, no module over 600 lines, no function over 40 (read with `ast`)."
import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent/'melanoma_nbdev'
MAX_MODULE, MAX_FUNC = 600, 40

def modules():
    "Library module name -> its parsed source, `_modidx.py` left out."
    return {p.stem: (p.read_text(), ast.parse(p.read_text())) for p in sorted(LIB.glob('*.py'))
            if p.stem not in ('_modidx', '__init__')}

def imported(node, names):
    "Library modules one `import` or `from ... import` node names."
    if isinstance(node, ast.Import): mods = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level == 0 and not base.startswith('melanoma_nbdev'): return set()
        base = base.removeprefix('melanoma_nbdev').lstrip('.')
        mods = [base] if base else [a.name for a in node.names]
    else: return set()
    return {m.removeprefix('melanoma_nbdev.').split('.')[0] for m in mods} & names

def graph():
    "Module -> the library modules it imports, module level or inside functions."
    mods = modules()
    return {m: set().union(*(imported(n, set(mods)) for n in ast.walk(tree))) - {m}
            for m, (_, tree) in mods.items()}

def find_cycle(g):
    "One import circle in `g` as a list of modules, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1: return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 2; stack.pop()
    for m in sorted(g):
        if m not in state and (c := visit(m)): return c

def long_functions():
    "(module.function, lines) for every def, nested or method, over `MAX_FUNC` lines."
    return [(f'{m}.{n.name}', n.end_lineno - n.lineno + 1) for m, (_, tree) in modules().items()
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNC]

def test_no_import_circle():
    g = graph()
    print({m: sorted(v) for m, v in g.items()})
    assert (c := find_cycle(g)) is None, f"import circle: {' -> '.join(c)}"

def test_module_sizes():
    sizes = {m: len(src.splitlines()) for m, (src, _) in modules().items()}
    print(sizes)
    assert not (big := {m: n for m, n in sizes.items() if n > MAX_MODULE}), f'modules over {MAX_MODULE} lines: {big}'

def test_function_sizes():
    assert not (long := long_functions()), f'functions over {MAX_FUNC} lines: {long}'
