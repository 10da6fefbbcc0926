# conda-pixi-pack self-extracting pack (format 1), written by conda-pixi-pack @@TOOL_VERSION@@.
#
# Run it with:
#   powershell -ExecutionPolicy Bypass -File environment.ps1 [-o DIR] [-e NAME] [-n NAME | -p PATH] [-s SHELL] [-h]
#
# After this script: a line __END_HEADER__, the pack (a pixi-pack format "1" tar) as one line of
# base64, a line __END_ARCHIVE__, and the embedded installer's program in base64 when there is one
# (pixi-pack's layout). `conda-pixi-pack unpack` and `inspect` read this file as it is.
param(
    [Alias("o")][string]$OutputDirectory = ".",
    [Alias("e")][string]$EnvName = "",
    [Alias("n")][string]$Name = "",
    [Alias("p")][string]$Prefix = "",
    [Alias("s")][string]$Shell = "powershell",
    [Alias("h")][switch]$Help
)

$ErrorActionPreference = "Stop"
$CppPlatform = '@@PLATFORM@@'
$CppPackages = @@PACKAGES@@
$CppWheels = '@@WHEELS@@'
$CppHasPip = @@HAS_PIP@@
$CppUnpackerKind = '@@UNPACKER_KIND@@'
$CppArchiveBase64 = @@ARCHIVE_BASE64@@  # characters of the archive's base64 line
$CppChunk = 4194304  # base64 characters decoded per step (a multiple of 4)

function Fail([string]$Message, [int]$Code = 1) {
    [Console]::Error.WriteLine("error: $Message")
    exit $Code
}

function Say([string]$Message) {
    [Console]::Error.WriteLine($Message)
}

if ($Help) {
    @"
Usage: powershell -File $PSCommandPath [-o DIR] [-e NAME] [-n NAME | -p PATH] [-s SHELL] [-h]

Create the conda environment packed in this file ($CppPlatform, $CppPackages conda packages), offline,
and write an activation script for it (-s powershell: activate.ps1, -s cmd: activate.bat).
It installs with the first of: the installer embedded in this file, conda-pixi-pack (or
`conda pixi-pack`) on PATH, micromamba, mamba or conda on PATH.
"@
    exit 0
}

if ($Name -and $Prefix) { Fail "give either -n or -p, not both" 2 }
if ($EnvName -and ($Name -or $Prefix)) { Fail "-e names a folder inside -o and cannot be combined with -n or -p" 2 }
if ($Shell -notin @("powershell", "cmd")) { Fail "unknown shell '$Shell' (choose one of: powershell, cmd)" 2 }

$machine = if ($env:PROCESSOR_ARCHITECTURE -eq "ARM64") { "win-arm64" } elseif ([Environment]::Is64BitOperatingSystem) { "win-64" } else { "win-32" }
if ($machine -ne $CppPlatform) { Fail "this pack is for $CppPlatform but this machine is $machine (pack the environment again with --platform $machine)" }

# The byte offset just after the first line that is exactly $Marker (the header is short).
function Find-Line([System.IO.FileStream]$Stream, [string]$Marker) {
    $Stream.Position = 0
    $window = New-Object byte[] 1048576
    $read = $Stream.Read($window, 0, $window.Length)
    $text = [Text.Encoding]::ASCII.GetString($window, 0, [Math]::Max($read, 0))
    $line = "`r`n$Marker`r`n"
    $index = $text.IndexOf($line)
    if ($index -lt 0) { return -1 }
    return $index + $line.Length
}

# Decode base64 from $From up to the next CR into $Sink, a few MiB at a time (flat memory).
function Copy-Base64([System.IO.FileStream]$Stream, [long]$From, [System.IO.Stream]$Sink) {
    $Stream.Position = $From
    $buffer = New-Object byte[] $CppChunk
    $carry = ""
    while ($true) {
        $read = $Stream.Read($buffer, 0, $buffer.Length)
        if ($read -le 0) { Fail "$PSCommandPath is damaged: it ends inside its archive (copy it again)" }
        $text = $carry + [Text.Encoding]::ASCII.GetString($buffer, 0, $read)
        $end = $text.IndexOf("`r")
        if ($end -ge 0) { $text = $text.Substring(0, $end) }
        $usable = if ($end -ge 0) { $text.Length } else { $text.Length - ($text.Length % 4) }
        $decoded = [Convert]::FromBase64String($text.Substring(0, $usable))
        $Sink.Write($decoded, 0, $decoded.Length)
        $carry = $text.Substring($usable)
        if ($end -ge 0) { return }
    }
}

function Choose-Installer {
    if ($CppUnpackerKind) { return "embedded" }
    if (Get-Command conda-pixi-pack -ErrorAction SilentlyContinue) { return "tool" }
    if (Get-Command conda -ErrorAction SilentlyContinue) {
        & conda pixi-pack --help *> $null
        if ($LASTEXITCODE -eq 0) { return "plugin" }
    }
    foreach ($candidate in @("micromamba", "mamba", "conda")) {
        if (Get-Command $candidate -ErrorAction SilentlyContinue) { return $candidate }
    }
    Fail "no installer found: install conda-pixi-pack (pip install conda-pixi-pack), micromamba, mamba or conda, or pack with --unpacker-source to embed one"
}

function Quote([string]$Text) { "'" + $Text.Replace("'", "''") + "'" }

function Write-Activation([string]$Target, [string]$OutDir) {
    $paths = @($Target, "$Target\Library\mingw-w64\bin", "$Target\Library\usr\bin", "$Target\Library\bin", "$Target\Scripts", "$Target\bin") -join ";"
    if ($Shell -eq "cmd") {
        $script = "@chcp 65001 > nul`r`n@SET `"Path=$paths;%Path%`"`r`n@SET `"CONDA_SHLVL=1`"`r`n@SET `"CONDA_PREFIX=$Target`"`r`n"
        Get-ChildItem "$Target\etc\conda\activate.d\*.bat" -ErrorAction SilentlyContinue | Sort-Object Name | ForEach-Object { $script += "@CALL `"$($_.FullName)`"`r`n" }
        $file = Join-Path $OutDir "activate.bat"
    } else {
        $script = "`${Env:Path} = $(Quote "$paths;") + `$Env:Path`r`n`${Env:CONDA_SHLVL} = `"1`"`r`n`${Env:CONDA_PREFIX} = $(Quote $Target)`r`n"
        Get-ChildItem "$Target\etc\conda\activate.d\*.ps1" -ErrorAction SilentlyContinue | Sort-Object Name | ForEach-Object { $script += ". $(Quote $_.FullName)`r`n" }
        $file = Join-Path $OutDir "activate.ps1"
    }
    $temp = "$file.$PID.tmp"
    [IO.File]::WriteAllText($temp, $script)
    Move-Item -Force $temp $file
    return $file
}

$self = $PSCommandPath
$installer = Choose-Installer
if ($installer -in @("tool", "plugin")) {
    $arguments = @("unpack", $self, "-s", $Shell)
    if ($OutputDirectory -ne ".") { $arguments += @("-o", $OutputDirectory) }
    if ($EnvName) { $arguments += @("-e", $EnvName) }
    if ($Name) { $arguments += @("-n", $Name) }
    if ($Prefix) { $arguments += @("-p", $Prefix) }
    if ($installer -eq "tool") { Say "Installing with conda-pixi-pack"; & conda-pixi-pack @arguments }
    else { Say "Installing with conda pixi-pack"; & conda pixi-pack @arguments }
    exit $LASTEXITCODE
}

if ($CppWheels -and -not $CppHasPip) {
    Fail "the pack has PyPI wheels ($CppWheels) and its environment has no pip to install them with $installer (install conda-pixi-pack and run this file again, or add pip to the environment and pack it again)"
}
if ($installer -eq "embedded" -and $Name) { Fail "-n needs conda; the embedded $CppUnpackerKind creates environments by path (use -p PATH or -o DIR -e NAME)" 2 }

$outDir = [IO.Path]::GetFullPath($OutputDirectory)
$target = if ($Name) { "" } elseif ($Prefix) { [IO.Path]::GetFullPath($Prefix) } else { Join-Path $outDir ($(if ($EnvName) { $EnvName } else { "env" })) }
if ($target -and (Test-Path $target) -and (Get-ChildItem -Force $target | Select-Object -First 1)) {
    Fail "the target $target already exists and is not empty (choose another target)"
}

$work = Join-Path ([IO.Path]::GetTempPath()) ("conda-pixi-pack-" + [Guid]::NewGuid().ToString("N"))
$made = $false
$succeeded = $false
try {
    New-Item -ItemType Directory -Force -Path $outDir, "$work\pack" | Out-Null
    $stream = [IO.File]::OpenRead($self)
    try {
        $archive = Find-Line $stream "__END_HEADER__"
        if ($archive -lt 0) { Fail "$self is damaged: no archive found (copy it again)" }
        Say "Extracting the pack into $work"
        $tar = New-Object System.Diagnostics.Process
        $tar.StartInfo.FileName = "tar.exe"
        $tar.StartInfo.Arguments = "-xf - -C `"$work\pack`""
        $tar.StartInfo.UseShellExecute = $false
        $tar.StartInfo.RedirectStandardInput = $true
        [void]$tar.Start()
        Copy-Base64 $stream $archive $tar.StandardInput.BaseStream
        $tar.StandardInput.Close()
        $tar.WaitForExit()
        if ($tar.ExitCode -ne 0) { Fail "the pack in $self is damaged (copy it again)" }
        if ($installer -eq "embedded") {
            $program = $archive + $CppArchiveBase64 + "`r`n__END_ARCHIVE__`r`n".Length
            $tool = Join-Path $work "$CppUnpackerKind.exe"
            $out = [IO.File]::Create($tool)
            try { Copy-Base64 $stream $program $out } finally { $out.Close() }
            $used = "$CppUnpackerKind (embedded)"
        } else {
            $tool = (Get-Command $installer).Source
            $used = "$installer ($tool)"
        }
    } finally { $stream.Close() }

    $where = if ($Name) { @("--name", $Name) } else { @("--prefix", $target) }
    $made = [bool]$target
    Say "Installing $CppPackages packages with $used"
    Push-Location "$work\pack"
    try {
        if ($installer -eq "embedded" -and $CppUnpackerKind -eq "micromamba") {
            & $tool create --yes --offline --no-rc --root-prefix "$work\root" @where --file explicit.txt
        } elseif ($installer -eq "embedded") {
            $env:CONDA_PKGS_DIRS = "$work\pkgs"
            & $tool create --yes --offline @where --file explicit.txt
        } else {
            & $tool create --yes --offline @where --file explicit.txt
        }
        if ($LASTEXITCODE -ne 0) { Fail "$used could not create the environment" }
    } finally { Pop-Location }
    if ($Name) {
        $target = (& (Get-Command $installer).Source env list | Where-Object { ($_ -split "\s+")[0] -eq $Name } | ForEach-Object { ($_ -split "\s+")[-1] } | Select-Object -First 1)
    }
    if ($CppWheels) {
        Say "Installing wheels: $CppWheels"
        & "$target\python.exe" -I -m pip install --quiet --no-deps --no-index --no-build-isolation --disable-pip-version-check --no-warn-script-location --find-links "$work\pack\pypi" ($CppWheels -split " ")
        if ($LASTEXITCODE -ne 0) { Fail "installing the wheels failed" }
    }
    $activate = Write-Activation $target $outDir
    $succeeded = $true
    Say "Unpacked $CppPackages conda packages into $target with $used"
    Say "Activate it with: . $activate"
} finally {
    if (-not $succeeded -and $made -and (Test-Path $target)) { Remove-Item -Recurse -Force $target }
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}
exit 0
