# A small module system with the semantics of nixpkgs' `lib.evalModules` that decide whether a
# test module evaluates under nixpkgs' test framework (framework.nix), written here because
# nixpkgs' own `lib` cannot be had in a clean clone of this repository: it is not committed
# (nixpkgs code stays out of this repository), no Debian, PyPI, npm or crates.io package ships
# it, and there is no other network. tests/nix/check runs the same checks against a real
# nixpkgs `lib` when one is given (NTD_NIXPKGS_LIB), which is how this file is kept honest.
#
# What it does as nixpkgs does, with nixpkgs' error messages (their first line):
#   - modules: attribute sets, functions of their arguments (`config`, `options`, `lib`,
#     `moduleType`, `_module.args.*`, `specialArgs`) or paths; `imports`; the shorthand of a
#     module without `options`/`config`;
#   - every option declared once; a definition of an option that does not exist is an error;
#   - definitions collected from every module, `mkIf`, `mkMerge` and `mkOverride` (`mkForce`,
#     `mkDefault`) pushed down to the options; only those of the highest priority merged, the
#     option's default at mkOptionDefault priority;
#   - types with nixpkgs' checks and merges: unique (`package`, `raw`: "defined multiple times
#     while it's expected to be unique"), equal (`str`, `bool`, `int`, `enum`, `path`),
#     `listOf` (concatenated), `functionTo`, `lazyAttrsOf`/`attrsOf`, `either`, `nullOr`,
#     `deferredModule`, and `submoduleWith`/`submodule`, whose definitions are modules evaluated
#     together with the submodule's own modules, under the option's name as prefix;
#   - `moduleType`: a submodule of all the modules of this evaluation, as nixpkgs passes it.
#     nixpkgs' test framework declares `interactive` with it, so that a test's modules are all
#     evaluated a second time for the interactive driver.
# Not done: freeform types, `disabledModules`, `extendModules`, option documentation, `_class`
# checks, warnings on renamed options. The checks need none of them.
{ lib }:
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    functionArgs
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    tail
    typeOf
    ;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  showOption = loc: concatStringsSep "." loc;
  # Values as far as a message needs them (nixpkgs prints them in full, with toPretty).
  showValue =
    v:
    if isString v then
      ''"${v}"''
    else if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if v.type or null == "derivation" then
      "<derivation ${v.name or "?"}>"
    else
      "<${typeOf v}>";
  showDefs = defs: concatStringsSep "" (map (d: "\n- In `${d.file}': ${showValue d.value}") defs);

  # --- properties ----------------------------------------------------------------------------
  defaultOverridePriority = 100;
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };

  # A definition above the options (an attribute set holding options): its properties pushed
  # into its attributes, as nixpkgs' pushDownProperties does, so that a condition is only
  # evaluated where an option's definitions are merged.
  pushDown =
    loc: file: v:
    if v._type or null == "merge" then
      concatMap (pushDown loc file) v.contents
    else if v._type or null == "if" then
      map (mapAttrs (_: mkIf v.condition)) (pushDown loc file v.content)
    else if v._type or null == "override" then
      map (mapAttrs (_: mkOverride v.priority)) (pushDown loc file v.content)
    else if isAttrs v then
      [ v ]
    else
      throw "A definition for option `${showOption loc}' is not of type `attribute set'. Definition values:${
        showDefs [
          {
            inherit file;
            value = v;
          }
        ]
      }";

  # At an option: `mkMerge` and `mkIf` resolved (overrides stay, for the priorities).
  discharge =
    v:
    if v._type or null == "merge" then
      concatMap discharge v.contents
    else if v._type or null == "if" then
      (
        if isBool v.condition then
          (if v.condition then discharge v.content else [ ])
        else
          throw "mkIf called with a non-Boolean condition"
      )
    else
      [ v ];

  priorityOf = d: if d.value._type or null == "override" then d.value.priority else defaultOverridePriority;
  stripOverride = d: if d.value._type or null == "override" then d // { value = d.value.content; } else d;

  # Definitions of one option (or one attribute / function result inside it) merged with its
  # type, as nixpkgs' mergeDefinitions: properties resolved, the highest priority kept, each
  # definition checked against the type. `isDefined` is false when nothing is left.
  mergeDefinitions =
    loc: type: defs:
    let
      discharged = concatMap (d: map (value: { inherit (d) file; inherit value; }) (discharge d.value)) defs;
      highest = foldl' (p: d: if priorityOf d < p then priorityOf d else p) 9999 discharged;
      kept = map stripOverride (filter (d: priorityOf d == highest) discharged);
      checked = map (
        d:
        if type.check d.value then
          d
        else
          throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs [ d ]}"
      ) kept;
    in
    {
      isDefined = kept != [ ];
      highestPrio = highest;
      mergedValue =
        if kept == [ ] then
          throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option."
        else
          type.merge loc checked;
    };

  # --- merge functions, as nixpkgs' lib/options.nix ------------------------------------------
  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\n\nDefinition values:${showDefs defs}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.";

  mergeEqualOption =
    loc: defs:
    (foldl' (
      first: d:
      if d.value != first.value then
        throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first d ]}\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions."
      else
        first
    ) (head defs) (tail defs)).value;

  mergeDefaultOption =
    loc: defs:
    let
      values = map (d: d.value) defs;
    in
    if length defs == 1 then
      head values
    else if all isList values then
      concatLists values
    else if all isAttrs values then
      foldl' (a: b: a // b) { } values
    else if all isBool values then
      any (x: x) values
    else if all isString values then
      concatStringsSep "" values
    else
      throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";

  # --- types ---------------------------------------------------------------------------------
  mkOptionType =
    {
      name,
      description ? name,
      check ? (_: true),
      merge ? mergeDefaultOption,
    }:
    {
      _type = "option-type";
      inherit
        name
        description
        check
        merge
        ;
    };

  isDerivation = v: isAttrs v && v.type or null == "derivation";

  types = rec {
    unspecified = mkOptionType { name = "unspecified"; };
    raw = mkOptionType {
      name = "raw";
      description = "raw value";
      merge = mergeOneOption;
    };
    package = mkOptionType {
      name = "package";
      check = v: isDerivation v || isPath v || (isString v && builtins.substring 0 1 v == "/");
      merge = mergeOneOption;
    };
    str = mkOptionType {
      name = "str";
      description = "string";
      check = isString;
      merge = mergeEqualOption;
    };
    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      check = isBool;
      merge = mergeEqualOption;
    };
    int = mkOptionType {
      name = "int";
      description = "signed integer";
      check = isInt;
      merge = mergeEqualOption;
    };
    path = mkOptionType {
      name = "path";
      check = v: isPath v || ((isString v || v ? outPath) && builtins.substring 0 1 (toString v) == "/");
      merge = mergeEqualOption;
    };
    enum =
      values:
      mkOptionType {
        name = "enum";
        description = "one of ${concatStringsSep ", " (map showValue values)}";
        check = v: elem v values;
        merge = mergeEqualOption;
      };
    listOf =
      elemType:
      mkOptionType {
        name = "listOf";
        description = "list of ${elemType.description}";
        check = v: isList v && all elemType.check v;
        merge = loc: defs: concatMap (d: d.value) defs;
      };
    attrsWith =
      elemType:
      mkOptionType {
        name = "lazyAttrsOf";
        description = "attribute set of ${elemType.description}";
        check = isAttrs;
        merge =
          loc: defs:
          listToAttrs (
            map (name: {
              inherit name;
              value =
                (mergeDefinitions (loc ++ [ name ]) elemType (
                  concatMap (d: if d.value ? ${name} then [ (d // { value = d.value.${name}; }) ] else [ ]) defs
                )).mergedValue;
            }) (unique (concatMap (d: attrNames d.value) defs))
          );
      };
    lazyAttrsOf = attrsWith;
    attrsOf = attrsWith;
    functionTo =
      elemType:
      mkOptionType {
        name = "functionTo";
        description = "function that evaluates to a(n) ${elemType.description}";
        check = isFunction;
        merge =
          loc: defs: args:
          (mergeDefinitions (loc ++ [ "<function body>" ]) elemType (
            map (d: d // { value = d.value args; }) defs
          )).mergedValue;
      };
    either =
      t1: t2:
      mkOptionType {
        name = "either";
        description = "${t1.description} or ${t2.description}";
        check = v: t1.check v || t2.check v;
        merge =
          loc: defs:
          if all (d: t1.check d.value) defs then
            t1.merge loc defs
          else if all (d: t2.check d.value) defs then
            t2.merge loc defs
          else
            mergeOneOption loc defs;
      };
    nullOr =
      elemType:
      mkOptionType {
        name = "nullOr";
        description = "null or ${elemType.description}";
        check = v: v == null || elemType.check v;
        merge =
          loc: defs:
          if all (d: d.value == null) defs then
            null
          else if any (d: d.value == null) defs then
            throw "The option `${showOption loc}' is defined both null and not null, in ${
              concatStringsSep ", " (map (d: "`${d.file}'") defs)
            }."
          else
            elemType.merge loc defs;
      };
    isModule = v: isAttrs v || isFunction v || isPath v;
    deferredModule = mkOptionType {
      name = "deferredModule";
      description = "module";
      check = isModule;
      merge = loc: defs: {
        imports = map (d: {
          _file = d.file;
          imports = [ d.value ];
        }) defs;
      };
    };
    submoduleWith =
      {
        modules,
        specialArgs ? { },
        class ? null,
      }:
      mkOptionType {
        name = "submodule";
        check = isModule;
        merge =
          loc: defs:
          (evalModules {
            inherit specialArgs class;
            prefix = loc;
            modules =
              modules
              ++ map (d: {
                _file = d.file;
                imports = [ d.value ];
              }) defs;
          }).config;
      };
    submodule = module: submoduleWith { modules = if isList module then module else [ module ]; };
  };

  mkOption = attrs: attrs // { _type = "option"; };
  isOption = v: isAttrs v && v._type or null == "option";

  # --- modules ---------------------------------------------------------------------------------
  # A module as { file, key, imports, options, config }, its function (if it is one) applied.
  normalize =
    args: file: key: m:
    let
      fileOf = m: if isPath m then toString m else file;
      value =
        if isPath m then
          import m
        else
          m;
      applied =
        if isFunction value then
          value (
            mapAttrs (
              name: _: if args.builtin ? ${name} then args.builtin.${name} else args.config._module.args.${name}
            ) (functionArgs value)
          )
        else
          value;
      structured = applied ? config || applied ? options;
      # With `config` or `options` at its top, a module may hold nothing else but these.
      extra = filter (
        name:
        !(elem name [
          "_file"
          "_class"
          "key"
          "imports"
          "disabledModules"
          "options"
          "config"
        ])
      ) (attrNames applied);
    in
    if !isAttrs applied then
      throw "Module `${fileOf m}' is of type ${typeOf applied}, not a module."
    else if structured && extra != [ ] then
      throw "Module `${applied._file or (fileOf m)}' has an unsupported attribute `${head extra}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${concatStringsSep " " extra}) into the explicit `config' attribute."
    else
      {
        file = applied._file or (fileOf m);
        key = applied.key or key;
        imports = applied.imports or [ ];
        options = applied.options or { };
        config =
          if structured then
            applied.config or { }
          else
            removeAttrs applied [
              "_file"
              "_class"
              "key"
              "imports"
              "disabledModules"
            ];
      };

  # Every module and, depth first, what it imports; a path or key seen before is skipped.
  collect =
    args: file: modules:
    let
      go =
        seen: parentFile: parentKey: ms:
        foldl' (
          acc: indexed:
          let
            m = indexed.m;
            key = if isPath m then toString m else "${parentKey}:anon-${toString indexed.i}";
          in
          if elem key acc.seen then
            acc
          else
            let
              n = normalize args parentFile key m;
              below = go (acc.seen ++ [ key ]) n.file n.key n.imports;
            in
            {
              seen = below.seen;
              modules = acc.modules ++ [ n ] ++ below.modules;
            }
        ) { inherit seen; modules = [ ]; } (
          builtins.genList (i: {
            inherit i;
            m = builtins.elemAt ms i;
          }) (length ms)
        );
    in
    (go [ ] file "" modules).modules;

  # The declarations of all modules as one tree; an option declared twice is an error.
  mergeDeclarations =
    loc: decls:
    if any (d: isOption d.value) decls then
      (
        if length decls > 1 then
          throw "The option `${showOption loc}' in `${(builtins.elemAt decls 1).file}' is already declared in `${(head decls).file}'."
        else
          (head decls).value // { declarations = [ (head decls).file ]; }
      )
    else
      listToAttrs (
        map (name: {
          inherit name;
          value = mergeDeclarations (loc ++ [ name ]) (
            concatMap (d: if d.value ? ${name} then [ (d // { value = d.value.${name}; }) ] else [ ]) decls
          );
        }) (unique (concatMap (d: attrNames d.value) decls))
      );

  # Each option's value from the definitions below `loc`, and the definitions of options that
  # do not exist.
  evalTree =
    loc: tree: defs:
    let
      below =
        name: concatMap (d: if d.value ? ${name} then [ (d // { value = d.value.${name}; }) ] else [ ]) defs;
      pushed =
        name:
        concatMap (d: map (value: { inherit (d) file; inherit value; }) (pushDown (loc ++ [ name ]) d.file d.value)) (
          below name
        );
    in
    {
      values = mapAttrs (
        name: sub:
        if isOption sub then
          evalOption (loc ++ [ name ]) sub (below name)
        else
          (evalTree (loc ++ [ name ]) sub (pushed name)).values
      ) tree;
      undeclared =
        concatMap (
          d:
          map (name: {
            loc = loc ++ [ name ];
            inherit (d) file;
          }) (filter (name: !(tree ? ${name})) (attrNames d.value))
        ) defs
        ++ concatMap (name: if isOption tree.${name} then [ ] else (evalTree (loc ++ [ name ]) tree.${name} (pushed name)).undeclared) (
          attrNames tree
        );
    };

  evalOption =
    loc: opt: defs:
    let
      type = opt.type or types.unspecified;
      withDefault =
        (
          if opt ? default then
            [
              {
                file = head opt.declarations;
                value = mkOverride 1500 opt.default;
              }
            ]
          else
            [ ]
        )
        ++ defs;
      merged = mergeDefinitions loc type withDefault;
    in
    if opt ? apply then opt.apply merged.mergedValue else merged.mergedValue;

  evalModules =
    {
      modules,
      prefix ? [ ],
      specialArgs ? { },
      class ? null,
    }:
    let
      # Declared in every evaluation, as nixpkgs' internal module declares it.
      internal = {
        _file = "lib/modules.nix";
        options._module.args = mkOption {
          type = types.lazyAttrsOf types.raw;
          default = { };
        };
      };
      moduleType = types.submoduleWith { inherit modules specialArgs class; };
      args = {
        builtin = specialArgs // {
          inherit config options moduleType;
          lib = specialArgs.lib or lib';
        };
        inherit config;
      };
      all = collect args "<unknown-file>" ([ internal ] ++ modules);
      options = mergeDeclarations prefix (
        map (m: {
          inherit (m) file;
          value = m.options;
        }) all
      );
      tree = evalTree prefix options (
        concatMap (m: map (value: { inherit (m) file; inherit value; }) (pushDown prefix m.file m.config)) all
      );
      config = tree.values;
      checked =
        if tree.undeclared == [ ] then
          removeAttrs config [ "_module" ]
        else
          let
            u = head tree.undeclared;
          in
          throw "The option `${showOption u.loc}' does not exist. Definition values:\n- In `${u.file}'";
    in
    {
      config = checked;
      inherit options;
      type = moduleType;
    };

  lib' = lib // {
    inherit
      evalModules
      mkOption
      mkOverride
      mkIf
      mkMerge
      types
      isOption
      mergeOneOption
      mergeEqualOption
      ;
    mkForce = mkOverride 50;
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    modules = { inherit defaultOverridePriority; };
    mapAttrs = builtins.mapAttrs;
  };
in
lib'
